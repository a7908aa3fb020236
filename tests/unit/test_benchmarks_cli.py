"""The benchmarks' CLI loads: every workload module imports and its options parse.

The benchmarks are their own make target (they take minutes), so without this a change
to an API they call would surface only when someone next measured.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_cli_imports_every_workload_and_prints_its_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--workload" in done.stdout
