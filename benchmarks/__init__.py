"""Benchmarks of gen_durable: each module is a CLI that prints JSON lines.

Run one with ``python -m benchmarks.<name> --help``.
"""
