"""Output polish: ``show`` lists children, ``ls`` hides a running row's stale ``run_at``,
``graph`` names an unknown class, tables come from a library, and ``gen-durable dev``
cleans up on SIGTERM as on SIGINT. Through the real entry point."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

import pytest
from _support.helpers import gen_durable_cli as gd
from _support.helpers import snapshot
from procs.run_options_app import Parent, Tick
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import gen_durable as durable
import gen_durable.testing


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_show_lists_a_parents_children(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        parent = durable.insert(s, Parent)
    durable.testing.drain(engine)
    assert snapshot(engine, parent).status == "done"
    data: dict[str, Any] = json.loads(ok(gd("show", str(parent), "--json", dsn=db_url)))
    listed = data["children"]["listed"]
    assert data["children"]["count"] == 3
    assert [(c["fsm"], c["status"], c["step"]) for c in listed] == [
        ("ops.Tick", "done", "perform")
    ] * 3
    text_form = ok(gd("show", str(parent), dsn=db_url))
    assert "children: 3" in text_form
    for c in listed:
        assert f"#{c['id']} ops.Tick done at perform" in text_form
    child = json.loads(ok(gd("show", str(listed[0]["id"]), "--json", dsn=db_url)))
    assert child["parent_id"] == parent and child["children"] == {"count": 0, "listed": []}


def test_ls_shows_no_run_at_for_a_running_row_in_a_plain_table(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        running, waiting = durable.insert_all(s, [Tick.new(args={}), Tick.new(args={})])
    with engine.begin() as conn:  # as a claim leaves it: running, its due time in the past
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET status = 'running', "
                "lease_owner = 'x', lease_token = gen_random_uuid(), "
                "lease_expires_at = now() + interval '1 hour' WHERE id = :id"
            ),
            {"id": running},
        )
    rows = {r["id"]: r for r in json.loads(ok(gd("ls", "--json", dsn=db_url)))}
    assert rows[running]["run_at"] is None and rows[waiting]["run_at"] is not None
    lines = ok(gd("ls", dsn=db_url)).splitlines()
    assert lines[0].split() == [
        "ID",
        "FSM",
        "STATUS",
        "STEP",
        "QUEUE",
        "ATTEMPT",
        "CORRELATION_KEY",
        "RUN_AT",
    ]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert by_id[str(running)].split()[2:] == ["running", "perform", "default", "0"]
    # Columns line up: each header starts where its column's cells start.
    start = lines[0].index("STATUS")
    assert all(line[start:].startswith(("running", "available")) for line in lines[1:])


def test_graph_names_a_class_nothing_knows(engine: Engine, db_url: str) -> None:
    out = gd("graph", "nobody.Knows", dsn=db_url)
    assert out.returncode == 1 and "unknown class 'nobody.Knows'" in out.stderr, out.stderr
    with Session(engine) as s, s.begin():
        durable.insert(s, Tick, args={})
    known = gd("graph", "ops.Tick", dsn=db_url)  # known, but its history is not recorded
    assert known.returncode == 1 and "no history is recorded" in known.stderr, known.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_dev_stops_its_server_and_deletes_its_data_on_a_signal(signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gen_durable", "dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the signal goes to gen-durable only, as `kill` sends it
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("GEN_DURABLE_DSN="), proc.stderr.read() if proc.stderr else ""
        url = line.strip().partition("=")[2]
        [data] = glob.glob(os.path.join(tempfile.gettempdir(), f"gd-dev-{proc.pid}-*"))
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM gen_durable.gd_instances")).scalar() == 0
        proc.send_signal(signum)
        assert proc.wait(60) == 0
        assert not os.path.exists(data)
        with pytest.raises(OperationalError):
            engine.connect().close()
        engine.dispose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
