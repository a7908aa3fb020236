"""A runner process of one version of the upgrade tests' FSM:
``python -m upgrades.upgrade_worker DB_URL --version N``.

Each committed step is recorded in ``gd_test_runs`` with the process id, so a test can
tell which version's runner ran what.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os

from sqlalchemy import create_engine, text

import gen_durable as durable

SETUP = """
CREATE TABLE IF NOT EXISTS gd_test_runs (
    id bigserial PRIMARY KEY, instance_id bigint, step text, pid int,
    at timestamptz DEFAULT clock_timestamp());
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--version", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    signup = importlib.import_module(f"upgrades.signup_v{args.version}").Signup
    engine = create_engine(args.url, pool_size=10, max_overflow=10)

    def record(report: durable.StepReport) -> None:
        if report.committed:
            with engine.begin() as conn:
                conn.execute(
                    text("INSERT INTO gd_test_runs (instance_id, step, pid) VALUES (:i, :s, :p)"),
                    {"i": report.instance_id, "s": report.step, "p": os.getpid()},
                )

    runner = durable.Runner(
        engine,
        queues={"default": 2},
        poll_interval=0.2,
        grace=0.5,
        fsms=[signup],
        observer=record,
    )
    print("ready", flush=True)
    runner.run_forever()


if __name__ == "__main__":
    main()
