"""What ``gen-durable run --import benchmarks.worker_app`` loads in W1P's runner processes:
the schema from ``GD_BENCH_SCHEMA`` (``gen-durable run`` has no option for it) and the
benchmark classes (:data:`benchmarks.proc.MODULES`), as in the other benchmark Runners."""

from __future__ import annotations

import importlib
import os

import gen_durable as durable
from benchmarks.proc import MODULES

durable.configure_schema(os.environ["GD_BENCH_SCHEMA"])
for _module in MODULES:
    importlib.import_module(_module)
