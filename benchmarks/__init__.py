"""Benchmarks: one script per benchmark, `python -m benchmarks.<name>`."""
