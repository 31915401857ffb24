"""NIWT profiling lab: which layers and directions of a teacher tower a task needs (docs/research.md).

sweep (perturbations with a prefix-activation cache) · metrics · record (activation shards) · spectral ·
bitmask (versioned JSON + schema) · collapse · heal (LoRA) · report · lab (all of it, `nexus profile run`).

Public API (stable; AGID and the towers build on it; everything else in the package may change):

    bitmask   load_bitmask(path) -> doc          read + validate (BitmaskError lists every problem)
              save_bitmask(doc, path) -> Path    validate, then write atomically
              validate(doc)                      raise BitmaskError, or return None
              kept_layers(doc) -> [int]          original indices of the layers the mask keeps
              BitmaskError                       a BadInputError (code "bad_input")
    collapse  collapse_model(model, doc | path | kept_list, *, revision=None) -> {"kept", "removed",
                  "layers_before", "layers_after"}: skipped layers leave the model in place, KV-cache slots and
                  config follow; a document for another model (layers, hidden size, model type) or, when given,
                  another weights revision is refused with BitmaskError before anything changes
    record    record_activations(model, sequences, out_dir, *, model_info, dataset, cfg=RecordConfig(),
                  pad_id=0) -> manifest      safetensors shards + manifest.json, bounded memory
              read_manifest(folder) -> manifest
              iter_activation_shards(folder, names=None, dtype=float32, verify=True) -> {name: tensor} per shard
              RecordConfig, ActivationError (missing, foreign, altered or corrupt recordings; a BadInputError)
    spectral  analyze(folder, sites=None, bases=None) -> {"sites": {site: {"layers": [...], "consecutive": ...}}}
              principal_bases(folder, site, k_key="k95") -> {"SITE.i.basis" [k, D], ".mean", ".std"}
    stack     decoder_stack(model) -> Stack (layers, final norm); UnsupportedModelError
    sweep     Variant, perturbations(n_layers, widths), run_variants(stack, tasks, variants, prefix=True)
"""

from nexus_engine.research.niwt.bitmask import BitmaskError, kept_layers, load_bitmask, save_bitmask, validate
from nexus_engine.research.niwt.collapse import collapse_model
from nexus_engine.research.niwt.record import (
    ActivationError,
    RecordConfig,
    iter_activation_shards,
    read_manifest,
    record_activations,
)
from nexus_engine.research.niwt.spectral import analyze, principal_bases
from nexus_engine.research.niwt.stack import UnsupportedModelError, decoder_stack
from nexus_engine.research.niwt.sweep import Variant, perturbations, run_variants

__all__ = ["ActivationError", "BitmaskError", "RecordConfig", "UnsupportedModelError", "Variant", "analyze",
           "collapse_model", "decoder_stack", "iter_activation_shards", "kept_layers", "load_bitmask",
           "perturbations", "principal_bases", "read_manifest", "record_activations", "run_variants",
           "save_bitmask", "validate"]
