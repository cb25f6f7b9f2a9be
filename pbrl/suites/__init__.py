"""Benchmark suites shipped with pbrl (TOML files in this package)."""
