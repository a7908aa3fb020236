"""The shop's worker: ``python -m examples.flask_checkout.worker`` runs the checkout flows.

It works on the database named by ``GEN_DURABLE_DSN`` — the app's — until SIGTERM or
Ctrl-C, then stops gracefully. Run as many as you like, on as many hosts.
``gen-durable run --app examples.flask_checkout.worker:make_engine --queues checkout=4``
does the same through the command line.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import Engine, create_engine

from gen_durable import Runner
from gen_durable.devserver import ENV_DSN, to_sqlalchemy_url

from . import flows  # noqa: F401 - defines (registers) the Checkout class this worker runs
from .orders import create_tables

QUEUES = {"checkout": 4}
POOL_SIZE = sum(QUEUES.values()) + len(QUEUES) + 6
"""A connection per step in flight, per queue, and six for the runner's own threads."""


def make_engine() -> Engine:
    """An engine on ``GEN_DURABLE_DSN``, with a pool the runner fits in."""
    url = os.environ.get(ENV_DSN)
    if not url:
        raise SystemExit(f"set {ENV_DSN} to the shop's database")
    return create_engine(to_sqlalchemy_url(url), pool_size=POOL_SIZE)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    engine = make_engine()
    create_tables(engine)  # the flows write to the orders table
    Runner(engine, queues=QUEUES).run_forever()
    engine.dispose()


if __name__ == "__main__":
    main()
