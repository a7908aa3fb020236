"""Benchmarks of gen_durable: CLIs that print JSON lines, then a table.

``python -m benchmarks run [--dsn ...] [--workload W1,W3] [--quick]`` measures the
workloads W1-W10 and W1P against pgbench on the same server (see ``python -m benchmarks
--help``); ``python -m benchmarks plans`` prints the query plans of the hot statements. A
module with a CLI of its own runs with ``python -m benchmarks.<name> --help`` (e.g.
``fanout``).
"""
