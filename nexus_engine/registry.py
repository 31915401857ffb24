"""Which class loads a tower of a given kind and backend. Imports are lazy so the worker starts fast."""

from __future__ import annotations

import importlib

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import NexusError
from nexus_engine.towers.base import Tower

# (kind, backend) -> "module:Class"
LOADERS: dict[tuple[str, str], str] = {
    ("llm", "llama_cpp"): "nexus_engine.towers.llm_llamacpp:LlamaCppChat",
    ("persona", "llama_cpp"): "nexus_engine.towers.llm_llamacpp:LlamaCppChat",
    ("llm", "transformers"): "nexus_engine.towers.llm_transformers:TransformersChat",
    ("persona", "transformers"): "nexus_engine.towers.llm_transformers:TransformersChat",
    # seed towers (towers/loaders.md says what loads each and what was exercised)
    ("vlm", "transformers"): "nexus_engine.towers.vlm:TransformersVLM",
    ("image_encoder", "transformers"): "nexus_engine.towers.encoders:ImageTextEncoder",
    ("video_encoder", "transformers"): "nexus_engine.towers.encoders:VideoClipEncoder",
    ("asr", "transformers"): "nexus_engine.towers.asr_hf:TransformersASR",
    ("asr", "nemo"): "nexus_engine.towers.asr_hf:NemoASR",
    ("persona", "moshi"): "nexus_engine.towers.persona:MoshiPersona",
    ("tts", "transformers"): "nexus_engine.towers.tts_hf:QwenTTS",
    ("image_gen", "diffusers"): "nexus_engine.towers.image_gen:ImageGenTower",
    ("video_gen", "diffusers"): "nexus_engine.towers.video_gen:VideoGenTower",
    # starter perception towers (docs/vision.md)
    ("image_encoder", "efficientnet"): "nexus_engine.towers.perception_starter:EfficientNetTower",
    ("ocr", "rapidocr"): "nexus_engine.towers.perception_starter:RapidOcrTower",
    ("embedder", "sentence_transformers"): "nexus_engine.towers.perception_starter:SentenceEmbedder",
    # starter voice towers (docs/voice.md)
    ("asr", "faster_whisper"): "nexus_engine.towers.asr_whisper:FasterWhisperASR",
    ("tts", "piper_onnx"): "nexus_engine.towers.tts_piper:PiperVoice",
    ("vad", "silero"): "nexus_engine.towers.vad_silero:SileroVAD",
}


class NoLoaderError(NexusError):
    code = "no_loader"


def build(spec: TowerSpec) -> Tower:
    target = LOADERS.get((spec.kind, spec.backend))
    if target is None:
        raise NoLoaderError(f"tower {spec.name!r}: no loader for kind {spec.kind!r} on backend {spec.backend!r} "
                            "in this version of Nexus",
                            "pick a tower with a supported kind/backend for this role in models.toml")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(spec)
