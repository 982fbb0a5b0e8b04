"""Benchmarks of the pipeline on the offline stack: `python -m bench` (see bench/__main__.py)."""
