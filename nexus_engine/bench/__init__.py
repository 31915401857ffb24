"""Benchmarks: commands that measure and write JSON (ratios side by side in one run), never test asserts."""
