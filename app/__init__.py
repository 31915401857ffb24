"""Nexus desktop app (PySide6). Qt only: the engine runs in a worker process; torch is never imported here."""
