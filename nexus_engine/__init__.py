"""Nexus engine: towers, residency, routing and the worker process. Never imports Qt."""

__version__ = "0.1.0"
