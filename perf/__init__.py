"""Benchmarks: perf_analyzer sweeps and the raw-vs-served side-by-side."""
