"""Typed errors with a message a user understands and a hint that says what to do.

Every error that crosses the worker boundary is one of these (serialized by its `code`), so the app
and the CLI can show the same specific text instead of a traceback.
"""

from __future__ import annotations


class NexusError(Exception):
    """Base error: `code` is stable (tests and the UI match on it), `hint` says how to fix it."""

    code = "nexus_error"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ConfigError(NexusError):
    code = "config_error"


class ModelMissingError(NexusError):
    code = "model_missing"


class PromptTooLongError(NexusError):
    code = "prompt_too_long"


class WorkerCrashedError(NexusError):
    code = "worker_crashed"


class CancelledError(NexusError):
    code = "cancelled"


class ProtocolError(NexusError):
    code = "protocol_error"


class UnsafeWeightsError(NexusError):
    code = "unsafe_weights"


class BudgetError(NexusError):
    code = "out_of_budget"


class BadInputError(NexusError):
    code = "bad_input"


class InternalError(NexusError):
    code = "internal_error"


_BY_CODE: dict[str, type[NexusError]] = {
    cls.code: cls
    for cls in (
        NexusError,
        ConfigError,
        ModelMissingError,
        PromptTooLongError,
        WorkerCrashedError,
        CancelledError,
        ProtocolError,
        UnsafeWeightsError,
        BudgetError,
        BadInputError,
        InternalError,
    )
}


def error_from_dict(data: dict[str, str]) -> NexusError:
    """Rebuild a typed error sent by the worker; unknown codes become a plain NexusError."""
    cls = _BY_CODE.get(str(data.get("code", "")), NexusError)
    err = cls(str(data.get("message", "unknown error")), str(data.get("hint", "")))
    return err
