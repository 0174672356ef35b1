"""Benchmark harness of the CXR triage app: `python bench/run.py --help` (see bench/README.md)."""
