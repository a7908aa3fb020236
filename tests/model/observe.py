"""What the engine did, read back from the database: per instance, its trail and its events.

Evidence tables (created by :func:`prepare`):

- ``model_runs``: one row per run of a step, written by the step itself before it does
  anything else, on a connection of its own (see :mod:`model.flows`);
- ``model_events``: what happened to an instance from outside its steps, each with the
  anchor the model needs — ``h``, the transitions committed so far (``gd_history`` rows,
  recorded for every class of the workload), and the instance's status then — read
  under the instance's row lock, in the transaction that did it:

  - ``send``: written by the driver in the transaction that sent the signals (``detail``:
    [id, name, idempotency key, duplicate] each), after locking the row;
  - ``crash`` (the reaper took back an expired lease), ``timeout`` (an await's timer
    fired), ``cancel`` (the driver's, from outside), ``cascade`` (a cancel by an
    ancestor or by ``cancel_rest``) and ``retry`` (from outside): written by a trigger on
    ``gd_instances`` inside that UPDATE, so ``h`` does not count the history row the same
    transaction writes after it (a timeout, a lost last lease, a cancel from outside).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import attrs
from sqlalchemy import Connection, Engine, text

from model.records import Commit, Event, Sig

SETUP = """
CREATE TABLE IF NOT EXISTS model_runs (
    id bigserial PRIMARY KEY, instance_id bigint NOT NULL, version int NOT NULL,
    attempt int NOT NULL, step text NOT NULL, pack jsonb NOT NULL, children jsonb NOT NULL,
    pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS model_runs_instance ON model_runs (instance_id, id);
CREATE TABLE IF NOT EXISTS model_events (
    id bigserial PRIMARY KEY, instance_id bigint NOT NULL, kind text NOT NULL,
    h int NOT NULL, status text NOT NULL, detail jsonb,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS model_events_instance ON model_events (instance_id, id);
CREATE OR REPLACE FUNCTION model_log() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    IF OLD.status = 'running' AND NEW.version = OLD.version
       AND NEW.error->>'type' = 'LeaseExpired' AND NEW.error IS DISTINCT FROM OLD.error THEN
        kind := 'crash';
    ELSIF NEW.status = 'cancelled' AND NEW.version = OLD.version THEN
        -- the driver's own cancels; an ancestor's or cancel_rest's say why in the error
        kind := CASE WHEN NEW.error->>'message' = 'from outside' THEN 'cancel'
                     ELSE 'cascade' END;
    ELSIF OLD.finished_at IS NOT NULL AND NEW.finished_at IS NULL THEN
        kind := 'retry';
    ELSIF OLD.status = 'awaiting' AND OLD.await_names IS NOT NULL
          AND NEW.status = 'available' AND NEW.await_names IS NULL THEN
        kind := 'timeout';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO model_events (instance_id, kind, h, status, detail)
    VALUES (NEW.id, kind,
            (SELECT count(*) FROM gen_durable.gd_history h WHERE h.instance_id = NEW.id),
            OLD.status, NEW.error);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS model_log ON gen_durable.gd_instances;
CREATE TRIGGER model_log AFTER UPDATE ON gen_durable.gd_instances FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION model_log();
"""

LOCK = text(
    "SELECT status, version, await_names, run_at > now() + interval '10 minutes' AS far, "
    "finished_at IS NOT NULL AS finished, correlation_key, "
    "await_pack IS NOT NULL AND finished_at IS NULL AS packed "
    "FROM gen_durable.gd_instances WHERE id = :id FOR UPDATE"
)
TRANSITIONS = text("SELECT count(*) FROM gen_durable.gd_history WHERE instance_id = :id")
LOG_SEND = text(
    "INSERT INTO model_events (instance_id, kind, h, status, detail) "
    "VALUES (:id, 'send', :h, :status, CAST(:detail AS jsonb))"
)


def prepare(engine: Engine) -> None:
    """Create the evidence tables and the trigger."""
    with engine.begin() as conn:
        conn.exec_driver_sql(SETUP)


def anchor(conn: Connection, instance_id: int) -> tuple[Any, int] | None:
    """Lock the instance's row; its row and ``h`` (None when it does not exist)."""
    row = conn.execute(LOCK, {"id": instance_id}).one_or_none()
    if row is None:
        return None
    return row, int(conn.execute(TRANSITIONS, {"id": instance_id}).scalar_one())


@attrs.define
class Observed:
    """One instance as the database holds it."""

    id: int
    fsm: str
    parent_id: int | None
    status: str
    step: str
    version: int
    state: Any
    result: Any
    error: str | None
    commits: list[Commit] = attrs.Factory(list)
    runs: list[tuple[Any, ...]] = attrs.Factory(list)
    events: list[Event] = attrs.Factory(list)
    sends: list[tuple[int, bool]] = attrs.Factory(list)
    signals: dict[int, tuple[str, int | None]] = attrs.Factory(dict)
    children: list[int] = attrs.Factory(list)


def read(engine: Engine) -> dict[int, Observed]:
    """Every instance of the database, with its history, runs, events and signals."""
    with engine.connect() as conn:
        q = lambda sql: conn.execute(text(sql)).all()  # noqa: E731
        found = {
            r.id: Observed(
                r.id, r.fsm, r.parent_id, r.status, r.step, r.version, r.state, r.result, r.error
            )
            for r in q(
                "SELECT id, fsm, parent_id, status, step, version, state, result, "
                "error->>'type' AS error FROM gen_durable.gd_instances ORDER BY id"
            )
        }
        for r in q(
            "SELECT instance_id, version, attempt, from_step, kind, to_step, status "
            "FROM gen_durable.gd_history ORDER BY id"
        ):
            found[r.instance_id].commits.append(Commit(*r[1:]))
        for r in q(
            "SELECT instance_id, version, attempt, step, pack, children FROM model_runs ORDER BY id"
        ):
            found[r.instance_id].runs.append(
                (r.version, r.attempt, r.step, tuple(r.pack), _rows(r.children))
            )
        for r in q("SELECT instance_id, kind, h, status, detail FROM model_events ORDER BY id"):
            item = found[r.instance_id]
            sigs = tuple(Sig(s[0], s[1], s[2]) for s in r.detail) if r.kind == "send" else ()
            item.events.append(Event(r.kind, r.h, r.status, sigs))
            item.sends += [(s[0], bool(s[3])) for s in r.detail] if r.kind == "send" else []
        for r in q("SELECT id, instance_id, name, consumed_version FROM gen_durable.gd_signals"):
            found[r.instance_id].signals[r.id] = (r.name, r.consumed_version)
    kids: dict[int, list[int]] = defaultdict(list)
    for item in found.values():
        if item.parent_id is not None:
            kids[item.parent_id].append(item.id)
    for parent, ids in kids.items():
        found[parent].children = sorted(ids)
    return found


def _rows(value: Any) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(x) for x in value)
