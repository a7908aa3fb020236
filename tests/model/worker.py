"""A runner process for the model's workload: ``python -m model.worker DB_URL [options]``.

The chaos harness starts it (``Cluster(module="model.worker")``) and SIGKILLs it; it
prints ``ready`` once its Runner is configured and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging

from sqlalchemy import create_engine

import gen_durable as durable
from gen_durable.runtime.notify import libpq_dsn
from model import flows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    engine = create_engine(args.url, pool_size=args.concurrency + 10, max_overflow=10)
    flows.configure(libpq_dsn(engine))
    runner = durable.Runner(
        engine,
        queues={"default": args.concurrency},
        fsms=list(flows.CLASSES.values()),
        lease=args.lease,
        poll_interval=args.poll,
        grace=0.5,
    )
    print("ready", flush=True)
    runner.run_forever()


if __name__ == "__main__":
    main()
