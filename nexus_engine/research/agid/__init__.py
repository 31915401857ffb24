"""AGID: activation-guided distillation of the teacher towers into small adapters (docs/agid.md).

text (collapsed student + bridge adapters trained on recorded activation trajectories) · vision (projector from a
vision tower's features to the chat LLM's prefix tokens) · audio (the same from the ASR tower's encoder states of
spoken utterances) · trainer (deterministic, checkpointed, resumable) · report. Builds on the NIWT lab (bitmasks,
activation recording, spectral analysis). No imports here: the engine reads adapter manifests without loading
torch.
"""
