"""Measurement scripts: `python -m benchmarks.<name> --help`; each prints one JSON object of figures."""
