"""Runs a workload against a database while runners run its steps: creates the instances,
sends their signals, cancels and retries them from outside, until everything settled.

The delivery rule, which keeps what the model must compute exact whatever the timing:
every batch of signals goes out in one transaction that first locks the instance's row
(``SELECT ... FOR UPDATE``) and reads its status and ``h`` (transitions committed), then
sends (by id or by correlation key — the key resolves to the same locked row) and logs
the batch with that anchor in ``model_events``. Whatever else changes the instance — a
claim, a commit, the wake by a signal, a timer, the reaper — takes that row lock too, so
the anchor places the batch exactly in the instance's own sequence: before its next claim
(it is then in the pack built there, within ``limit``), or while a step runs (after its
pack was built, before its commit — which sees it pending). The model applies the batch
at the same point. Cancels and retries need no anchor of their own: the trigger logs them
inside their UPDATE (:mod:`model.observe`).

When a batch goes out is chosen from what the last poll of the rows showed: ``asap``,
when ``parked``, ``late`` (from a version), ``retrying`` (between the first claim of a
step that has a pack and the commit that consumes it: while it runs, backs off after an
exception or waits after a RateLimited), once ``finished``; the condition is checked
again under the lock. An instance parked on an await that nothing planned will satisfy
is *rescued* (sent one signal of each awaited name, or of one for any-of) once seen
parked on two polls — except a holding child, released only once its parent finished.
Four sender threads do this side by side; batches of one instance go out one at a time.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from model import observe
from model.flows import CLASSES, Task

POLL = text(
    "SELECT id, parent_id, status, version, await_names, await_all, "
    "await_pack IS NOT NULL AND finished_at IS NULL AS packed, "
    "run_at > now() + interval '10 minutes' AS far, finished_at IS NOT NULL AS finished "
    "FROM gen_durable.gd_instances"
)
STATE = text("SELECT id, fsm, state FROM gen_durable.gd_instances WHERE id = ANY(:ids)")


@dataclass
class Tracked:
    id: int
    cls: str
    script: dict[str, Any]
    parent: int | None
    deliveries: list[dict[str, Any]]
    cancel: int | None = None
    retry: bool = False
    busy: bool = False
    parked: tuple[int, int] = (-1, 0)
    """(version, polls) it has been seen parked on an await."""


@dataclass
class Driver:
    engine: Engine
    plans: list[dict[str, Any]]
    senders: int = 4
    interval: float = 0.1
    tracked: dict[int, Tracked] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    """Top-level instance ids, in plan order."""
    sent: int = 0
    rescued: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Tracked, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._rows: dict[int, Any] = {}

    # -- creating ------------------------------------------------------------------------
    def create(self, batch: int = 50) -> None:
        """Insert every planned instance (and send what goes with its insert)."""
        self.ids = [0] * len(self.plans)
        grouped = [n for n, p in enumerate(self.plans) if p["create"] == "batch"]
        for start in range(0, len(grouped), batch):
            chunk = grouped[start : start + batch]
            with Session(self.engine) as s, s.begin():
                specs = [self._spec(self.plans[n]) for n in chunk]
                for n, iid in zip(chunk, durable.insert_all(s, specs), strict=True):
                    self._created(s, n, iid)
        for n, plan in enumerate(self.plans):
            if plan["create"] == "batch":
                continue
            with Session(self.engine) as s, s.begin():
                if plan["create"] == "insert":
                    spec = self._spec(plan)
                    iid = durable.insert(s, spec.cls, state=spec.state, correlation_key=plan["key"])
                else:
                    first = plan["script"]["deliveries"][0]["signals"][0]
                    got = durable.signal(
                        s, plan["key"], first["name"], {"start": n}, idempotency_key=first["idem"],
                        start=self._spec(plan),
                    )  # fmt: skip
                    assert got.started, got
                    iid = got.instance_id
                    detail = [[got.signal_id, first["name"], first["idem"], False]]
                    self._log(s, iid, 0, "available", detail)
                self._created(s, n, iid)

    @staticmethod
    def _spec(plan: dict[str, Any]) -> durable.InsertSpec:
        cls = CLASSES[plan["cls"]]
        return cls.new(state={"script": plan["script"], "seen": []}, correlation_key=plan["key"])

    def _created(self, s: Session, n: int, iid: int) -> None:
        plan = self.plans[n]
        self.ids[n] = iid
        t = self._track(iid, plan["cls"], plan["script"], None)
        for item in [d for d in t.deliveries if d["when"] == "insert"]:
            assert self._send(s, t, item), "an insert's own signals always go"
            t.deliveries.remove(item)

    def _track(self, iid: int, cls: str, script: dict[str, Any], parent: int | None) -> Tracked:
        pending = [d for d in script.get("deliveries", ()) if d["when"] != "start"]
        t = Tracked(iid, cls, script, parent, pending, script.get("cancel"), script.get("retry"))
        with self._lock:
            self.tracked[iid] = t
        return t

    # -- sending under the row lock ------------------------------------------------------
    def _log(self, s: Session, iid: int, h: int, status: str, detail: list[Any]) -> None:
        s.execute(
            observe.LOG_SEND, {"id": iid, "h": h, "status": status, "detail": json.dumps(detail)}
        )
        self.sent += len(detail)

    def _send(self, s: Session, t: Tracked, batch: dict[str, Any]) -> bool:
        found = observe.anchor(s.connection(), t.id)
        assert found is not None
        row, h = found
        if not self._due(t, batch, row):
            return False
        detail = []
        for n, sig in enumerate(batch["signals"]):
            by_key = sig["by"] == "key" and not row.finished and row.correlation_key
            start = None
            if by_key and sig.get("start") and t.cls != Task.name:
                start = CLASSES[t.cls].new(state={"script": t.script, "seen": []})
            got = durable.signal(
                s, row.correlation_key if by_key else t.id, sig["name"], {"n": n},
                idempotency_key=sig.get("idem"), start=start,
            )  # fmt: skip
            assert got.instance_id == t.id and not got.started, (t.id, got)
            detail.append([got.signal_id, sig["name"], sig.get("idem"), got.duplicate])
        self._log(s, t.id, h, row.status, detail)
        return True

    def _due(self, t: Tracked, batch: dict[str, Any], row: Any) -> bool:
        when = batch["when"]
        if when == "rescue":
            return bool(
                row.status == "awaiting"
                and row.await_names
                and row.far is not False
                and row.version == batch["after"]
            )
        return (
            when == "asap"
            or (when == "insert" and row.status == "available")
            or (when == "parked" and row.status == "awaiting")
            or (when == "late" and row.version >= batch["after"])
            or (when == "retrying" and row.packed)
            or row.finished
        )

    # -- the loop ------------------------------------------------------------------------
    def run(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Drive until every instance finished and nothing is left to do."""
        workers = [
            threading.Thread(target=self._work, daemon=True, name=f"model-sender-{n}")
            for n in range(self.senders)
        ]
        for w in workers:
            w.start()
        deadline = time.monotonic() + timeout
        try:
            while not self._settled():
                if time.monotonic() > deadline:
                    raise AssertionError(f"the workload did not settle: {self.stuck()}")
                if self.errors:
                    raise AssertionError("sender errors:\n" + "\n".join(self.errors[:5]))
                time.sleep(self.interval)
        finally:
            for _ in workers:
                self._queue.put(None)
            for w in workers:
                w.join(60)

    def stuck(self) -> list[Any]:
        """Where unfinished instances are (for a failure message)."""
        rows = [r for r in self._rows.values() if not r.finished][:20]
        return [(r.id, r.status, r.version, r.await_names) for r in rows]

    def _settled(self) -> bool:
        with self.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(POLL)}
            new = [i for i in rows if i not in self.tracked]
            for r in conn.execute(STATE, {"ids": new}) if new else ():
                script = r.state if r.fsm == Task.name else r.state["script"]
                self._track(r.id, r.fsm, script, rows[r.id].parent_id)
        self._rows = rows
        idle = True
        for t in list(self.tracked.values()):
            row = rows[t.id]
            if t.busy:
                idle = False
                continue
            item = self._next(t, row)
            if item is not None:
                t.busy, idle = True, False
                self._queue.put(item)
            elif not row.finished or t.deliveries or (t.retry and row.status != "done"):
                idle = False
        return idle

    def _next(self, t: Tracked, row: Any) -> tuple[str, Tracked, Any] | None:
        for batch in t.deliveries:
            if self._due(t, batch, row):
                return ("send", t, batch)
        if t.cancel is not None and row.finished:
            t.cancel = None
        packed = t.script.get("cancel_when") == "packed"
        seen = row.packed if packed else row.status == "awaiting"
        if t.cancel is not None and seen and row.version >= t.cancel:
            return ("cancel", t, None)
        if t.retry and row.status in ("failed", "cancelled"):
            return ("retry", t, None)
        if row.status != "awaiting" or not row.await_names or row.far is False:
            t.parked = (-1, 0)
            return None
        polls = t.parked[1] + 1 if t.parked[0] == row.version else 1
        t.parked = (row.version, polls)
        holding = t.script.get("hold") and not self._rows[t.parent].finished
        if polls < 2 or holding:
            return None
        names = list(row.await_names)
        if not row.await_all:
            names = [random.Random(f"{t.id}:{row.version}").choice(names)]
        signals = [{"name": n, "by": "id"} for n in names]
        return ("send", t, {"when": "rescue", "after": row.version, "signals": signals})

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, t, batch = item
            try:
                with Session(self.engine) as s, s.begin():
                    if kind == "send":
                        if self._send(s, t, batch):
                            if batch in t.deliveries:
                                t.deliveries.remove(batch)
                            else:
                                self.rescued += 1
                    elif kind == "cancel":
                        durable.cancel(s, t.id, reason="from outside")
                        t.cancel = None
                    else:
                        durable.retry(s, t.id)
                        t.retry = False
            except Exception as exc:  # tried again at the next poll
                if _unexpected(exc):
                    self.errors.append(f"{kind} {t.id}: {exc!r}")
            finally:
                t.busy = False


def _unexpected(exc: Exception) -> bool:
    """Errors a concurrent engine may cause (a deadlock, a serialization failure) are not."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code not in ("40001", "40P01", "55P03")
