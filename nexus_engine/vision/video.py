"""Video understanding: decode with PyAV, keep the frames where the scene changes (or one per stride), look
at each kept frame, and merge neighbours that show the same thing into a timeline.

Sampling: every decoded frame is shrunk to a 32x18 grey thumbnail and compared with the last kept one (mean
absolute difference); a frame is kept when the difference passes SCENE, or when STRIDE has passed since the
last kept frame, so a long static shot still gets looked at. Videos longer than LONG_S are read keyframes only
(the decoder skips everything else: a 2-hour film is read in seconds, not minutes). Kept frames are thinned
evenly to `max_frames`. Progress is reported in seconds of video read.

Bad input: an empty file, a file with no video stream, one whose codec this FFmpeg build cannot decode, and
one that yields no frame are BadInputErrors naming the file; a video damaged part-way is described up to the
damage, and the description says so. Limits (models.toml [limits]): a video longer than `video_seconds` by its
container metadata, or with frames larger than `image_pixels`, is refused before a frame is decoded; one whose
metadata says nothing (or lies) stops being read at that length.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nexus_engine.config import limits
from nexus_engine.errors import BadInputError, CancelledError
from nexus_engine.vision import labels
from nexus_engine.vision.describe import LIFT, MAX_WORDS, MAYBE, ImageDescription, Seen, describe_image, text_phrase
from nexus_engine.vision.media import check_file

SCENE = 0.12  # mean absolute grey difference (0-1) that counts as a cut
MIN_GAP_S = 0.5  # two kept frames are at least this far apart (a flash is not a scene)
LONG_S = 120.0  # longer videos are read keyframes only
MAX_FRAMES = 12
FRAME_SIDE = 640  # kept frames are stored at most this large (the classifier sees 224 px)

OnProgress = Callable[[float, float, str], None]  # (done, total, message)


@dataclass
class Frame:
    t: float  # seconds
    image: Any  # PIL RGB
    reason: str  # first | scene change | stride | keyframe


@dataclass
class VideoInfo:
    duration: float
    width: int
    height: int
    fps: float | None
    codec: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Segment:
    start: float
    end: float
    seen: list[Seen]
    text: list[str]
    clip: Any = None  # VideoMAE clip feature (seed path), for the index

    def phrase(self) -> str:
        span = f"{clock(self.start)}–{clock(self.end)}"
        sure = [s.phrase() for s in self.seen if s.sure]
        maybe = [s.phrase() for s in self.seen if not s.sure]
        what = ("shows " + ", ".join(sure)) if sure else ""
        if maybe:
            what += ("; " if what else "") + "possibly " + " or ".join(maybe)
        return f"{span} {what or 'the classifier cannot tell what it shows'}"


@dataclass
class VideoDescription:
    info: VideoInfo
    frames: list[tuple[Frame, ImageDescription]]
    segments: list[Segment]
    ms: dict[str, float] = field(default_factory=dict)

    @property
    def features(self) -> Any:
        feats = [d.features for _, d in self.frames if d.features is not None]
        return np.mean(feats, axis=0) if feats else None

    def words(self) -> list[str]:
        return [w for _, d in self.frames for w in d.words()]

    def sentence(self) -> str:
        how = {f.reason for f, _ in self.frames} - {"first"}
        head = (f"{self.info.duration:.1f} s, {len(self.frames)} frames looked at"
                + (f" ({', '.join(sorted(how))})" if how else ""))
        texts = [ln for s in self.segments for ln in s.text]
        parts = [head, *(s.phrase() for s in self.segments), text_phrase(list(dict.fromkeys(texts)))]
        return "; ".join([*parts, *self.info.notes])

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence(), "duration_s": round(self.info.duration, 3), "width": self.info.width,
                "height": self.info.height, "fps": self.info.fps, "codec": self.info.codec, "notes": self.info.notes,
                "frames": [{"t": round(f.t, 3), "reason": f.reason, **d.to_dict()} for f, d in self.frames],
                "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                              "seen": [[x.word, round(x.score, 4)] for x in s.seen]} for s in self.segments],
                "ms": {k: round(v, 1) for k, v in self.ms.items()}}


def clock(t: float) -> str:
    m, s = divmod(round(t), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


# ------------------------------------------------------------------------------------------------ decoding
def sample_frames(path: str | Path, max_frames: int = MAX_FRAMES, stride_s: float | None = None,
                  on_progress: OnProgress | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[list[Frame], VideoInfo]:
    """Decode `path` and keep up to `max_frames` frames at scene changes or every `stride_s` seconds."""
    import av

    p = check_file(path)
    try:
        container = av.open(str(p))
    except EOFError as e:  # PyAV's EOFError is also an FFmpegError: a header and then nothing
        raise BadInputError(f"{p.name}: the video has no frames (the file ends before the first one)") from e
    except (av.FFmpegError, OSError, ValueError) as e:
        raise BadInputError(f"{p.name}: not a readable video ({e})") from e
    with container:
        if not container.streams.video:
            raise BadInputError(f"{p.name}: the file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:  # a damaged or truncated header: FFmpeg found the stream but no codec for it
            raise BadInputError(f"{p.name}: the video stream cannot be decoded (damaged file or unknown codec)",
                                "convert it to H.264 MP4, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
        duration = _duration(container, stream)
        _check_limits(p.name, duration, ctx.width, ctx.height)
        info = VideoInfo(duration, ctx.width, ctx.height, float(stream.average_rate) if stream.average_rate else None,
                         ctx.name)
        stride = stride_s or max(1.0, duration / max_frames if duration else 2.0)
        keyframes_only = duration > LONG_S
        stream.thread_type = "AUTO"
        if keyframes_only:
            ctx.skip_frame = "NONKEY"
            info.notes.append("long video: only keyframes were read")
        frames = _scan(container, stream, p.name, stride, keyframes_only, info, on_progress, should_stop)
    if not frames:
        raise BadInputError(f"{p.name}: the video has no frames that could be decoded")
    if not info.duration:
        info.duration = frames[-1].t
    return _thin(frames, max_frames), info


def _scan(container: Any, stream: Any, name: str, stride: float, keyframes_only: bool, info: VideoInfo,
          on_progress: OnProgress | None, should_stop: Callable[[], bool] | None) -> list[Frame]:
    import av

    frames: list[Frame] = []
    last_thumb: np.ndarray | None = None
    last_t, reported = -1e9, 0.0
    longest = limits.active().video_seconds
    try:
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else (frames[-1].t if frames else 0.0)
            if t > longest:  # the metadata said less (or nothing): stop at the limit, describe what was read
                info.notes.append(f"only the first {clock(longest)} were read (the video_seconds limit)")
                break
            if should_stop is not None and should_stop():
                raise CancelledError("stopped while reading the video")
            thumb = frame.reformat(width=32, height=18, format="gray").to_ndarray().astype(np.float32) / 255.0
            reason = ""
            if last_thumb is None:
                reason = "first"
            elif keyframes_only and t - last_t >= stride:
                reason = "keyframe"
            elif t - last_t >= MIN_GAP_S and float(np.abs(thumb - last_thumb).mean()) > SCENE:
                reason = "scene change"
            elif t - last_t >= stride:
                reason = "stride"
            if reason:
                image = frame.to_image()
                image.thumbnail((FRAME_SIDE, FRAME_SIDE))
                frames.append(Frame(t, image, reason))
                last_thumb, last_t = thumb, t
            if on_progress is not None and t - reported >= 1.0:
                reported = t
                on_progress(t, info.duration, f"reading video {clock(t)}/{clock(info.duration)}")
    except av.FFmpegError as e:
        if not frames:
            raise BadInputError(f"{name}: the {info.codec} video could not be decoded ({e})",
                                "convert it to H.264 MP4, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4") from e
        info.notes.append(f"the video is damaged after {clock(frames[-1].t)}; described up to there")
    except EOFError:
        pass
    return frames


def _check_limits(name: str, duration: float, width: int, height: int) -> None:
    """Refuse from the container's metadata, before any frame is decoded."""
    lim = limits.active()
    if duration > lim.video_seconds:
        raise BadInputError(f"{name}: the video is {clock(duration)} long; the limit is {clock(lim.video_seconds)}",
                            "cut it shorter, or raise video_seconds in [limits] of your models.toml")
    if width * height > lim.image_pixels:
        raise BadInputError(f"{name}: the video's frames are {width}x{height}; the limit is "
                            f"{lim.image_pixels / 1e6:g} megapixels a frame", "scale the video down first")


def _duration(container: Any, stream: Any) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / 1_000_000


def _thin(frames: list[Frame], n: int) -> list[Frame]:
    if len(frames) <= n:
        return frames
    keep = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return [frames[i] for i in sorted(set(keep.tolist()))]


# ---------------------------------------------------------------------------------------------- describing
def describe_video(frames: list[Frame], info: VideoInfo, classifier: Any, ocr: Any | None,
                   clip_encoder: Any | None = None, on_progress: OnProgress | None = None) -> VideoDescription:
    """Per-frame labels (one batch), OCR on a few frames, neighbours with the same main word merged."""
    t0 = time.perf_counter()
    # OCR is the slow part: only the first, middle and last frames are read
    read_at = {0, len(frames) // 2, len(frames) - 1} if ocr is not None else set()
    described: list[tuple[Frame, ImageDescription]] = []
    for i, f in enumerate(frames):
        if on_progress is not None:
            on_progress(i, len(frames), f"describing frame {i + 1}/{len(frames)} ({clock(f.t)})")
        d = describe_image(f.image, classifier, ocr if i in read_at else None)
        described.append((f, d))
    ms = {"per_frame": (time.perf_counter() - t0) * 1000 / max(1, len(frames))}
    segments = _segments(described, info.duration)
    if clip_encoder is not None:  # seed path: one VideoMAE feature per segment, for the index
        for s in segments:
            s.clip = clip_encoder.embed_clip([f.image for f, _ in described if s.start <= f.t <= s.end]).numpy()
    return VideoDescription(info, described, segments, ms)


def _segments(described: list[tuple[Frame, ImageDescription]], duration: float) -> list[Segment]:
    """Runs of frames whose main word is the same; each run's words come from its frames' averaged scores."""
    runs: list[list[tuple[Frame, ImageDescription]]] = []
    for f, d in described:
        key = d.seen[0].word if d.seen else ""
        if runs and (runs[-1][-1][1].seen[0].word if runs[-1][-1][1].seen else "") == key:
            runs[-1].append((f, d))
        else:
            runs.append([(f, d)])
    out = []
    for i, run in enumerate(runs):
        end = runs[i + 1][0][0].t if i + 1 < len(runs) else max(duration, run[-1][0].t)
        seen = _merge_seen([d for _, d in run])
        text = list(dict.fromkeys(ln for _, d in run for ln in d.text))
        out.append(Segment(run[0][0].t, end, seen, text))
    return out


def _merge_seen(descs: list[ImageDescription]) -> list[Seen]:
    """Average each word's score over the frames (a word missing from a frame counts as 0 there)."""
    scores: dict[str, float] = {}
    classes: dict[str, list[tuple[str, float]]] = {}
    for d in descs:
        for s in d.seen:
            scores[s.word] = scores.get(s.word, 0.0) + s.score / len(descs)
            classes.setdefault(s.word, s.classes)
    best = sorted(scores.items(), key=lambda kv: -kv[1])[:MAX_WORDS]
    return [Seen(w, s, classes[w]) for w, s in best if s >= max(MAYBE, LIFT * labels.prior(w))]

