"""Benchmarks: ``python -m tests.perf.bench`` (see README.md here). Not collected by pytest."""
