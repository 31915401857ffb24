"""Consolidation: one answer from several towers — the trained projector path when an adapter exists, else the
chat LLM composing tower outputs as text (vision/compose.py). adapters (files + manifests) · projector (the
module, features, prompt splicing, decoding) · answer (which path, the projector path) · student (AGID text
student loading). No torch at import."""
