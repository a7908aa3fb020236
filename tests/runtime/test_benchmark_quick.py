"""The benchmarks' fast tier runs end to end: W1 (a Runner drained in a child process, the
pgbench calibration, CPU by thread), W3 (a Runner in this process) and W9 (keys, a child
Runner with stamps), on the benchmark's own embedded server.

Never a timing: only that each workload reports its figures and that no drain stalled.
The full run is ``make bench`` (docs/performance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_benchmark_runs_and_reports_each_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--workload", "W1,W3,W9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    figures = {(r["workload"], r["name"]): r for r in records if r["kind"] == "figure"}
    assert {w for w, _ in figures} == {"W1", "W3", "W9"}
    assert all(isinstance(r["value"], int | float) and r["value"] > 0 for r in figures.values())
    drain = figures[("W1", "jobs, concurrency 10")]
    assert drain["drained"] is True and drain["runner_threads_us_per_step"]
    assert "no step for" not in done.stderr  # a stalled drain is reported, not failed
