"""Seed-path perception: a SigLIP2 image-text encoder used as a zero-shot ImageNet classifier.

The seed profile has no EfficientNet, but SigLIP2 can score an image against any text. Scoring it against
"a photo of a {class}" for the same 1000 ImageNet class names gives the describe/video code the probabilities
it expects, so the thresholds, the everyday words and the timeline work unchanged. The class prompts are
embedded once per encoder. Features returned are SigLIP2's own image embeddings, which the index stores in
the `siglip:` space and queries with SigLIP2 text embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nexus_engine.vision import labels

PROMPT = "a photo of a {}."
TEMPERATURE = 100.0  # CLIP-style logit scale for the softmax over the 1000 prompts


class SiglipClassifier:
    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self._classes: np.ndarray | None = None

    def _class_vectors(self) -> np.ndarray:
        if self._classes is None:
            prompts = [PROMPT.format(n) for n in labels.names()]
            chunks = [self.encoder.embed_texts(prompts[i:i + 100]).numpy() for i in range(0, len(prompts), 100)]
            self._classes = np.concatenate(chunks)  # [1000, d]
        return self._classes

    def classify(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        feats = self.encoder.embed_images(images).numpy()  # [n, d], unit length
        logits = TEMPERATURE * feats @ self._class_vectors().T  # [n, 1000]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True), feats
