"""Typed errors of AGID training and adapter loading: each says what is wrong and what to do about it."""

from __future__ import annotations

from nexus_engine.errors import BadInputError, NexusError


class RevisionMismatchError(NexusError):
    """The teacher on disk is not the one a bitmask, an activation recording or an adapter was made from."""

    code = "revision_mismatch"


class CorruptShardError(BadInputError):
    """An activation shard is missing, truncated, or its bytes do not match the manifest's sha256."""

    code = "corrupt_shard"


class AdapterMismatchError(NexusError):
    """An adapter manifest written for another tower (or kind, or teacher) than the one loading it."""

    code = "adapter_mismatch"


class AdapterFormatError(BadInputError):
    """An adapter folder whose manifest or weights file cannot be read or fails validation."""

    code = "adapter_format"


class NaNLossError(NexusError):
    """The loss (or a gradient) stopped being a finite number: training stops before the weights are spoilt."""

    code = "nan_loss"

    def __init__(self, message: str, hint: str = "", step: int = -1) -> None:
        super().__init__(message, hint)
        self.step = step


class TrainingInterrupted(NexusError):
    """Training was interrupted (Ctrl-C, SIGTERM); `step` is the last step saved in a checkpoint."""

    code = "training_interrupted"

    def __init__(self, message: str, hint: str = "", step: int = 0) -> None:
        super().__init__(message, hint)
        self.step = step


class ResumeMismatchError(NexusError):
    """A checkpoint from a run with another configuration or other data: resuming it would mix two runs."""

    code = "resume_mismatch"
