"""Towers: one module per kind of model, all behind the small interface in base.py."""
