"""Benchmarks: speed, memory and drift measurements with results tables (run as modules)."""
