"""Benchmarks for face-reactor; see bench/README.md. Not part of the installed package."""
