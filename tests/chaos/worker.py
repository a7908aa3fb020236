"""A runner process for the chaos suite: ``python -m chaos.worker DB_URL [options]``.

It prints ``ready`` once its Runner is configured, runs until SIGTERM (or until it is
killed), and on a clean exit prints ``faults {json}`` with the fault points' counts.
``--send KEY`` turns it into a client that signals ``go`` to those instances and exits.

Faults come from ``GEN_DURABLE_FAULTS``. ``raise=serialization`` and ``raise=deadlock``
make PostgreSQL itself raise the error (SQLSTATE 40001 / 40P01) inside the transaction
at the fault point, so that it travels the driver's real path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import gen_durable as durable
from chaos.flows import Flow, Leaf, configure, record_fenced
from gen_durable import faults
from gen_durable.runtime.notify import libpq_dsn

APPLICATION = "gd-chaos-runner"
"""Prefix of the ``application_name`` of every connection a runner process opens (the
process id follows)."""

SQLSTATES = {"serialization": "40001", "deadlock": "40P01"}


def raised_by_postgres(sqlstate: str) -> Callable[[object], BaseException]:
    """A fault error factory: PostgreSQL raises ``sqlstate`` in the caller's transaction."""

    def factory(context: object) -> BaseException:
        if isinstance(context, Connection):
            context.execute(
                text(
                    "DO $$ BEGIN RAISE EXCEPTION 'injected by the chaos suite' "
                    f"USING ERRCODE = '{sqlstate}'; END $$"
                )
            )
        return faults.InjectedFault(f"SQLSTATE {sqlstate} injected outside a transaction")

    return factory


for _name, _state in SQLSTATES.items():
    faults.register_error(_name, raised_by_postgres(_state))


def observe(report: durable.StepReport) -> None:
    if not report.committed:
        try:
            record_fenced(report)
        except Exception:  # evidence only; never disturb the runner
            logging.getLogger("chaos").warning("could not record a fenced commit")


def send(url: str, keys: list[str]) -> None:
    engine = create_engine(url)
    for key in keys:
        n = int(key.rsplit(":", 1)[1])
        with Session(engine) as s, s.begin():
            durable.signal(s, key, "go", {"n": n}, idempotency_key=f"go:{n}")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--gc-retention", type=float, default=7 * 86400.0)
    parser.add_argument("--gc-interval", type=float, default=60.0)
    parser.add_argument("--send", action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(process)d %(threadName)s %(message)s"
    )
    url = make_url(args.url).update_query_dict({"application_name": f"{APPLICATION}-{os.getpid()}"})
    rendered = url.render_as_string(hide_password=False)
    if args.send:
        send(rendered, args.send)
        return
    engine = create_engine(rendered, pool_size=args.concurrency + 10, max_overflow=10)
    configure(libpq_dsn(engine))
    runner = durable.Runner(
        engine,
        queues={"default": args.concurrency},
        fsms=[Flow, Leaf],
        lease=args.lease,
        poll_interval=args.poll,
        grace=0.5,
        gc_retention=args.gc_retention,
        gc_interval=args.gc_interval,
        observer=observe,
    )
    print("ready", flush=True)
    runner.run_forever()
    plan = faults.active
    counts: dict[str, Any] = {}
    if plan is not None:
        counts = {f"{r.point}:{r.action}": {"hits": r.hits, "fired": r.fired} for r in plan.rules}
    print("faults " + json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
