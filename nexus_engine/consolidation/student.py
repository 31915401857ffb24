"""Loading an AGID text student: a transformers llm tower with `options.agid = "<adapter folder>"`.

The tower loads its teacher weights as usual (through the residency manager, like any tower), then
`apply_text_adapter` checks the adapter's manifest (this tower, kind text_bridges, the teacher revision it was
trained on), removes the layers its bitmask skips (NIWT collapse) and attaches the trained bridges at the cuts.
The tower then chats, streams and caches exactly as before, with fewer layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nexus_engine.consolidation import adapters
from nexus_engine.research.agid.errors import AdapterFormatError, RevisionMismatchError


def apply_text_adapter(model: Any, folder: Path, tower: str, revision: str) -> dict[str, Any]:
    """Collapse `model` by the adapter's bitmask and attach its bridges, in place. Returns what was done."""
    from nexus_engine.research.agid import bridges as br
    from nexus_engine.research.niwt import collapse_model, decoder_stack

    manifest = adapters.read_manifest(folder, tower=tower, kind="text_bridges")
    if manifest["teacher"]["revision"] != revision:
        raise RevisionMismatchError(f"the AGID adapter in {folder} was trained on {tower} revision "
                                    f"{manifest['teacher']['revision']}, not on the weights loaded now ({revision})",
                                    f"retrain it: nexus train text --tower {tower}")
    n = decoder_stack(model).n_layers
    if manifest["teacher"].get("num_layers") != n:
        raise RevisionMismatchError(f"the AGID adapter in {folder} is for a {manifest['teacher'].get('num_layers')}-"
                                    f"layer model; this one has {n}")
    bitmask = manifest.get("bitmask") or {}
    bfile = folder / bitmask.get("file", "bitmask.json")
    if not bfile.is_file() or adapters.file_sha256(bfile) != bitmask.get("sha256"):
        raise AdapterFormatError(f"{bfile} is missing or does not match the adapter's manifest",
                                 f"retrain: nexus train text --tower {tower}")
    tensors = adapters.load_tensors(folder, manifest)
    kept = list(bitmask["kept"])
    info = collapse_model(model, kept)
    cuts = br.cuts_of(kept, n)
    ranks = {c["name"]: int(c["rank"]) for c in manifest["config"]["cuts"]}
    if sorted(ranks) != sorted(c.name for c in cuts):
        raise AdapterFormatError(f"{folder}: the manifest's cuts do not match its bitmask")
    bridges = br.make_bridges(cuts, int(manifest["config"]["hidden_size"]), ranks,
                              eps=float(manifest["config"].get("eps", 1e-5)))
    bridged = br.Bridged(model, cuts, bridges)
    try:
        bridged.load(tensors)
    except (KeyError, RuntimeError) as e:
        bridged.remove()
        raise AdapterFormatError(f"{folder}: the adapter's tensors do not fit its manifest ({e})") from e
    return {**info, "agid": str(folder), "bridges": {c.name: ranks[c.name] for c in cuts},
            "adapter_sha256": manifest["files"][adapters.ADAPTER_FILE][:16]}
