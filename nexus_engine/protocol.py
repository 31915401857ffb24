"""The typed, versioned messages between the app/CLI (client) and the engine worker process.

Two tiers: CONTROL messages (ping, cancel, shutdown, status) are handled by the worker's reader as soon as
they arrive, overtaking queued DATA requests (chat, load, …). Every request has an id; every request's
stream of events ends with exactly one Done or Error.

Wire format: one JSON object per pipe message, `{"v": 1, "type": "...", ...fields}`. JSON (not pickle) so a
message is data, never code, and so the decoder can be fuzzed: anything malformed raises ProtocolError.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

from nexus_engine.errors import NexusError, ProtocolError

PROTOCOL_VERSION = 1
CONTROL = "control"
DATA = "data"

_REGISTRY: dict[str, type[Message]] = {}


def new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Message:
    """Base of every message. `type_name` is the wire tag, `tier` decides queueing in the worker."""

    type_name: ClassVar[str] = ""
    tier: ClassVar[str] = DATA
    id: str = field(default_factory=new_id)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            if cls.type_name in _REGISTRY:
                raise TypeError(f"duplicate message type {cls.type_name!r}")
            _REGISTRY[cls.type_name] = cls

    def encode(self) -> bytes:
        payload = {"v": PROTOCOL_VERSION, "type": self.type_name, **asdict(self)}
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------- requests
@dataclass
class Ping(Message):
    type_name: ClassVar[str] = "ping"
    tier: ClassVar[str] = CONTROL


@dataclass
class Cancel(Message):
    """Stop request `target`: a queued one never starts, a running one stops at its next token/step."""

    type_name: ClassVar[str] = "cancel"
    tier: ClassVar[str] = CONTROL
    target: str = ""


@dataclass
class Shutdown(Message):
    type_name: ClassVar[str] = "shutdown"
    tier: ClassVar[str] = CONTROL


@dataclass
class StatusRequest(Message):
    """Which towers are loaded and what the worker is doing; answered at once, even mid-generation."""

    type_name: ClassVar[str] = "status"
    tier: ClassVar[str] = CONTROL


@dataclass
class ChatRequest(Message):
    """Generate a reply to `messages` ([{"role": "user"|"assistant"|"system", "content": str}, …])."""

    type_name: ClassVar[str] = "chat"
    messages: list[dict[str, str]] = field(default_factory=list)
    tower: str | None = None  # a tower name; None: the profile's tower for `role`
    role: str = "auto"  # "auto": the router decides (and sends a RouteEvent); else a role name
    max_tokens: int = 512
    temperature: float | None = None  # None: the tower's default (models.toml options), else 0.7
    top_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # files the user attached: [{"path": absolute path the worker can read, "kind": image|video|audio|file,
    # "mime": …}]; the app validates and decodes them before sending
    attachments: list[dict[str, Any]] = field(default_factory=list)
    voice: bool = False  # the turn came by microphone (a routing feature)


@dataclass
class GenerateRequest(Message):
    """Draw an image (kind="image") or animate one (kind="video", from `image`); Progress per step, Done with
    the output path. Cancel stops between steps."""

    type_name: ClassVar[str] = "generate"
    kind: str = "image"
    prompt: str = ""
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 28
    seed: int | None = None
    image: str | None = None  # input image path for image-to-video
    frames: int = 14
    tower: str | None = None  # None: the profile's tower for imagination / video
    preview_every: int = 0  # send a preview image path with Progress every N steps (0: none)


@dataclass
class LoadTower(Message):
    """Load a tower now (warm-up, benchmarks); Done carries load_ms and where the weights came from."""

    type_name: ClassVar[str] = "load_tower"
    tower: str = ""


@dataclass
class UnloadTower(Message):
    type_name: ClassVar[str] = "unload_tower"
    tower: str = ""


# ------------------------------------------------------------------------------------------------ events
@dataclass
class Hello(Message):
    """First message from a fresh worker."""

    type_name: ClassVar[str] = "hello"
    pid: int = 0
    version: int = PROTOCOL_VERSION
    profile: str = ""


@dataclass
class Pong(Message):
    type_name: ClassVar[str] = "pong"
    tier: ClassVar[str] = CONTROL


@dataclass
class Started(Message):
    """The request left the queue and is running (a crash after this cannot be silently replayed)."""

    type_name: ClassVar[str] = "started"


@dataclass
class TokenChunk(Message):
    type_name: ClassVar[str] = "token"
    text: str = ""
    n_tokens: int = 1


@dataclass
class Progress(Message):
    type_name: ClassVar[str] = "progress"
    step: int = 0
    total: int = 0
    message: str = ""
    eta_s: float | None = None
    preview: str = ""  # path of an intermediate image, when the request asked for previews


@dataclass
class Done(Message):
    type_name: ClassVar[str] = "done"
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Error(Message):
    type_name: ClassVar[str] = "error"
    code: str = "internal_error"
    message: str = ""
    hint: str = ""

    @classmethod
    def of(cls, request_id: str, err: NexusError) -> Error:
        return cls(id=request_id, code=err.code, message=err.message, hint=err.hint)


@dataclass
class TowerEvent(Message):
    """A residency change: load, unload, evict, swap or refusal, with bytes and milliseconds."""

    type_name: ClassVar[str] = "tower_event"
    tower: str = ""
    action: str = ""
    bytes: int = 0
    ms: float = 0.0
    detail: str = ""


@dataclass
class Status(Message):
    type_name: ClassVar[str] = "status_reply"
    tier: ClassVar[str] = CONTROL
    busy: str | None = None  # id of the running request
    queued: int = 0
    towers: dict[str, dict[str, Any]] = field(default_factory=dict)
    residency: dict[str, Any] = field(default_factory=dict)  # budget + towers snapshot (empty before a first load)


@dataclass
class RouteEvent(Message):
    """The router's decision for request `id`: roles and towers chosen, every role's score, and why."""

    type_name: ClassVar[str] = "route"
    roles: list[str] = field(default_factory=list)
    towers: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    ms: float = 0.0
    not_installed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ResidencyEvent(Message):
    """A budget snapshot (limits, used bytes per device, each tower's tier/bytes/in-use), sent after every
    residency change so the app's monitor draws real numbers."""

    type_name: ClassVar[str] = "residency"
    snapshot: dict[str, Any] = field(default_factory=dict)


TERMINAL = (Done, Error)


# ------------------------------------------------------------------------------------------------ decode
def _check(value: Any, annotation: Any) -> bool:
    """A small runtime type check for the annotation forms used above."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_check(v, inner) for v in value)
    if origin is dict:
        k, v = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, dict) and all(_check(a, k) and _check(b, v) for a, b in value.items())
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


_ID = re.compile(r"^[A-Za-z0-9_-]{0,64}$")  # ids name files (generated images): never a path, never huge


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf; NaN/inf would reach samplers and limits as numbers
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def decode(data: bytes) -> Message:
    """Bytes from the pipe -> a typed message, or ProtocolError saying exactly what is wrong."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_float=_finite, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ProtocolError(f"not a JSON message: {e}") from e
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(obj).__name__}")
    if "\\ud" in data.decode("utf-8").lower():  # JSON may escape lone surrogates, which no tokenizer or SQLite takes
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise ProtocolError("a text field is not valid Unicode (a lone surrogate)",
                                "the text was damaged on the way; type or paste it again") from e
    version = obj.pop("v", None)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} is not {PROTOCOL_VERSION}",
                            "the app and the engine come from different installs: reinstall Nexus")
    kind = obj.pop("type", None)
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in obj:
        if key not in known:
            raise ProtocolError(f"{kind}: unknown field {key!r}")
    for name, f in known.items():
        if name not in obj:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProtocolError(f"{kind}: missing field {name!r}")
            continue
        if not _check(obj[name], hints[name]):
            raise ProtocolError(f"{kind}: field {name!r} has the wrong type ({type(obj[name]).__name__})")
    for name in ("id", "target"):
        if isinstance(obj.get(name), str) and not _ID.match(obj[name]):
            raise ProtocolError(f"{kind}: {name} {obj[name][:80]!r} is not an id (letters, digits, - and _; "
                                "at most 64)")
    return cls(**obj)


def message_types() -> dict[str, type[Message]]:
    return dict(_REGISTRY)


# ------------------------------------------------------------------------------------ vision (issue 8)
@dataclass
class DescribeRequest(Message):
    """Describe an image or video (`path`), or answer `question` about it. Progress while frames are read and
    looked at; the answer streams as TokenChunks; Done carries the description (`stats["description"]`)."""

    type_name: ClassVar[str] = "describe"
    path: str = ""
    question: str = ""
    max_tokens: int = 256
    index: bool = True  # add it to the media search index too


@dataclass
class SearchRequest(Message):
    """Find indexed images and videos matching `query` (or looking like the image at `like`). `paths` are
    indexed first if they are not yet (the client passes the history's attachments). Done carries
    `stats["results"]`: [{"path", "kind", "score", "description"}], best first."""

    type_name: ClassVar[str] = "search"
    query: str = ""
    like: str = ""
    paths: list[str] = field(default_factory=list)
    limit: int = 10
    kind: str = ""  # "", image or video


# ------------------------------------------------------------------------------------- voice (issue 6)
@dataclass
class VoiceStart(Message):
    """Start a spoken conversation on the worker's audio devices (CONTROL: answered while other work runs; the
    call runs on its own threads). Events carry this id: VoiceState, VoiceLevel, Transcript, VoiceReply; the
    call ends with Done (stats: turns, latencies) after VoiceStop, or Error (no microphone, …)."""

    type_name: ClassVar[str] = "voice_start"
    tier: ClassVar[str] = CONTROL
    persona: str = ""  # system prompt; "" = the default voice persona
    conversation_id: int | None = None  # continue this chat (spoken turns appear in it); None = a new one
    input_device: str = ""  # a device name (or part of it); "" = the system default
    output_device: str = ""
    asr: str | None = None  # tower names; None = the profile's hearing / speech / persona towers
    tts: str | None = None
    llm: str | None = None
    voice: str | None = None  # a speaker name for TTS towers that have several
    barge_in: bool = True
    push_to_talk: bool = False  # False: hands-free (the VAD finds the turns)
    aec: bool = True
    max_tokens: int = 120
    turn: dict[str, float] = field(default_factory=dict)  # TurnConfig overrides (thresholds, hangover, …)
    history: str = ""  # the chat history file the turns go to (the app's); "" = the default one


@dataclass
class VoiceStop(Message):
    type_name: ClassVar[str] = "voice_stop"
    tier: ClassVar[str] = CONTROL


@dataclass
class VoiceControl(Message):
    """Change the running call at once; None leaves a setting as it is. ptt: the push-to-talk button is down."""

    type_name: ClassVar[str] = "voice_control"
    tier: ClassVar[str] = CONTROL
    mute: bool | None = None
    barge_in: bool | None = None
    ptt: bool | None = None
    persona: str | None = None


@dataclass
class TranscribeRequest(Message):
    """Transcribe an audio file. long=True: chunked, with Progress and timestamped Transcript segments as it
    goes (hour-long files; Cancel stops between chunks). Done stats: text, duration_s, segments (long)."""

    type_name: ClassVar[str] = "transcribe"
    path: str = ""
    long: bool = False
    tower: str | None = None  # None: the profile's hearing_long (long) or hearing tower


@dataclass
class VoiceState(Message):
    """connecting | listening | hearing (the user speaks) | thinking | speaking | muted | reconnecting | error
    | ended, with a sentence for the user."""

    type_name: ClassVar[str] = "voice_state"
    state: str = "listening"
    detail: str = ""
    conversation_id: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class VoiceLevel(Message):
    """The microphone after echo cancellation, ~10 times a second: level in dBFS and speech probability."""

    type_name: ClassVar[str] = "voice_level"
    db: float = -100.0
    speech: float = 0.0
    clipping: bool = False


@dataclass
class Transcript(Message):
    """What the user said: partial (while speaking) or final (the turn's text, stored as a chat message)."""

    type_name: ClassVar[str] = "transcript"
    text: str = ""
    final: bool = False
    segments: list[dict[str, Any]] = field(default_factory=list)  # start/end seconds + text (files)
    message_id: int | None = None
    conversation_id: int | None = None


@dataclass
class VoiceReply(Message):
    """A piece of Nexus's spoken answer as it is spoken; final=True ends the answer (status done|cancelled|
    error, stats: the turn's latency breakdown in ms)."""

    type_name: ClassVar[str] = "voice_reply"
    text: str = ""
    final: bool = False
    status: str = ""
    message_id: int | None = None
    conversation_id: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
