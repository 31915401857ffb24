"""Vision-language towers on transformers (Step3-VL-10B, or any image-text-to-text model).

Loads AutoModelForImageTextToText + AutoProcessor. A model that ships its own code (config.json `auto_map`,
as Step3-VL does) is refused unless the spec sets trust_remote_code, which config validation only allows
with a hub source pinned to a reviewed commit; its class then comes from the auto_map entry it declares
(image-text-to-text, vision2seq or causal LM, in that order). `options.key_mapping` (regex -> new prefix) is
passed to from_pretrained for checkpoints whose weight names differ from their code's, as Step3's card does.

`ask(images, question, params, cancel)` streams the answer: generate() runs in a thread with a
TextIteratorStreamer, and a stopping criterion checks `cancel` before every token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nexus_engine.config.schema import TowerSpec
from nexus_engine.errors import ModelMissingError
from nexus_engine.towers.base import GenParams
from nexus_engine.towers.seed_common import (
    BNB,
    FLOATS,
    SeedTower,
    cast_floats,
    check_remote_code,
    input_device,
    load_errors,
    pil_image,
    read_config,
    transformers_kwargs,
)

REMOTE_AUTO_CLASSES = ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM")


class TransformersVLM(SeedTower):
    QUANTS = (*BNB, *FLOATS)

    def _load(self, spec: TowerSpec, folder: Path) -> dict[str, Any]:
        import transformers

        config = read_config(folder)
        remote = check_remote_code(spec, config, folder)
        auto_name = _auto_class_name(config, remote)
        kwargs = transformers_kwargs(spec, folder)
        if spec.options.get("key_mapping"):
            kwargs["key_mapping"] = dict(spec.options["key_mapping"])
        with load_errors(spec, folder):
            model = getattr(transformers, auto_name).from_pretrained(folder, **kwargs).eval()
            proc = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=spec.trust_remote_code)
        self._modules.update(model=model, processor=proc)
        return {"model_type": config.get("model_type", ""), "class": type(model).__name__, "remote_code": remote,
                "dtype": str(model.dtype).removeprefix("torch.")}

    def ask(self, images: list[Any], question: str, params: GenParams, cancel: threading.Event) -> Iterator[str]:
        """Answer `question` about `images` (PIL or HxWx3 arrays), one text piece at a time."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        model, proc = self._need("model"), self._need("processor")
        if cancel.is_set():  # generate() always makes one token before asking the stopping criteria
            return
        content = [*({"type": "image"} for _ in images), {"type": "text", "text": question}]
        prompt = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                          tokenize=False)
        enc = proc(images=[pil_image(i) for i in images] or None, text=[prompt], return_tensors="pt")
        enc = cast_floats(enc.to(input_device(model)), model.dtype)
        closed = threading.Event()  # the consumer stopped reading: stop generating too

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: Any) -> bool:
                return cancel.is_set() or closed.is_set()

        streamer = TextIteratorStreamer(proc.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = params.temperature > 0
        gen: dict[str, Any] = dict(**enc, max_new_tokens=params.max_tokens, do_sample=sample, streamer=streamer,
                                   stopping_criteria=StoppingCriteriaList([_Stop()]))
        if sample:
            gen.update(temperature=params.temperature, top_p=params.top_p)
        if params.repeat_penalty != 1.0:
            gen["repetition_penalty"] = params.repeat_penalty
        errors: list[BaseException] = []

        def run() -> None:
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    model.generate(**gen)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, name=f"vlm-{self.spec.name}", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            closed.set()
            thread.join()
        if errors:
            raise errors[0]

    def warmup(self) -> None:
        import numpy as np

        for _ in self.ask([np.zeros((32, 32, 3), dtype=np.uint8)], "Hi", GenParams(max_tokens=1, temperature=0),
                          threading.Event()):
            pass


def _auto_class_name(config: dict[str, Any], remote: bool) -> str:
    if not remote:
        return "AutoModelForImageTextToText"
    auto_map = config.get("auto_map", {})
    for name in REMOTE_AUTO_CLASSES:
        if name in auto_map:
            return name
    raise ModelMissingError(f"the model's auto_map names none of {', '.join(REMOTE_AUTO_CLASSES)} "
                            f"(it has {', '.join(auto_map) or 'nothing'})",
                            "this is not a vision-language checkpoint Nexus knows how to load")
