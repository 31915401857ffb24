"""Chat templates and stop sequences shared by every chat backend.

Templates come from the model file (GGUF metadata / tokenizer config), so they are rendered in Jinja's
immutable sandbox: a model file is data and must not be able to run code.
"""

from __future__ import annotations

from functools import lru_cache

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nexus_engine.errors import BadInputError

ROLES = ("system", "user", "assistant")


def check_messages(messages: list[dict[str, str]]) -> None:
    if not messages:
        raise BadInputError("nothing to answer: the conversation is empty", "send at least one user message")
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadInputError(f"message {i} is malformed: {m!r:.80}",
                                "each message needs role system/user/assistant and text content")


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render(template: str, messages: list[dict[str, str]], bos: str = "", eos: str = "") -> str:
    """The prompt text for `messages`, ending where the assistant's reply begins."""
    check_messages(messages)
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=True,
                                         bos_token=bos, eos_token=eos)
    except TemplateError as e:
        raise BadInputError(f"the model's chat template rejected the conversation: {e}") from e


class StopMatcher:
    """Streams text through, holding back only what could still become a stop sequence.

    feed() returns the text that is safe to emit; `stopped` turns true once a stop sequence appeared (the
    sequence itself and anything after it are dropped).
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        hold = 0
        for s in self.stops:  # longest suffix of the buffer that is a proper prefix of a stop sequence
            for k in range(min(len(s) - 1, len(self.buffer)), 0, -1):
                if self.buffer.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.buffer[: len(self.buffer) - hold]
        self.buffer = self.buffer[len(out):]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out
