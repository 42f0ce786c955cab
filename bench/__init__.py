"""Benchmarks that print tables: python -m bench.ssh, python -m bench.recorder."""
