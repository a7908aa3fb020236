"""``gen-durable graph``, ``audit``, ``show``'s history and the progress bars, in process."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Cancel, Done, Next
from gen_durable.cli import main
from gen_durable.cli.history import mermaid
from gen_durable.cli.operator import default_actor
from gen_durable.store import migration
from gen_durable.testing import drain


class Review(FSM):
    """submit -> (await a decision) -> review -> publish or cancel; a flaky publish retries."""

    name = "cli_history.Review"
    steps = ("submit", "review", "publish")
    history = "all"
    backoff = durable.Backoff(base=0.0, factor=1.0, max=0.0, jitter=0.0)

    def submit(self, ctx: durable.Context) -> Await:
        return Await("decision", then="review")

    def review(self, ctx: durable.Context) -> Next | Cancel:
        return Next("publish") if ctx.awaited[0].payload["approve"] else Cancel("rejected")

    def publish(self, ctx: durable.Context) -> Done:
        if ctx.state.get("flaky") and ctx.attempt == 1:
            raise ConnectionError("cdn unavailable")
        return Done()


def gd(db_url: str, *args: str) -> Result:
    """Run the command line in this process (so a test can make it think it has a TTY)."""
    return CliRunner().invoke(main, list(args), env={"GEN_DURABLE_DSN": db_url})


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def run_reviews(engine: Engine, verdicts: list[bool], flaky: int) -> list[int]:
    """Run one Review per verdict to the end; the first ``flaky`` approved ones retry once."""
    approved = [i for i, v in enumerate(verdicts) if v][:flaky]
    specs = [
        Review.new(state={"flaky": i in approved}, correlation_key=f"r-{i}")
        for i in range(len(verdicts))
    ]
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, specs)
    drain(engine)
    with Session(engine) as s, s.begin():
        for i, verdict in enumerate(verdicts):
            durable.signal(s, f"r-{i}", "decision", {"approve": verdict})
    drain(engine)
    return ids


def test_graph_draws_what_the_recorded_runs_did(engine: Engine, db_url: str) -> None:
    verdicts = [True, False, True, True, False]
    run_reviews(engine, verdicts, flaky=1)
    approved, rejected = verdicts.count(True), verdicts.count(False)
    assert ok(gd(db_url, "graph", Review.name)).splitlines() == [
        "stateDiagram-v2",
        f"    [*] --> submit: started ({len(verdicts)})",
        "    publish --> publish: retry (1)",
        f"    publish --> [*]: done ({approved})",
        f"    review --> publish: next ({approved})",
        f"    review --> [*]: cancel ({rejected})",
        f"    submit --> review: await ({len(verdicts)})",
    ]
    edges = json.loads(ok(gd(db_url, "graph", Review.name, "--json")))
    assert edges["fsm"] == Review.name
    assert {(e["from"], e["to"], e["kind"]): e["count"] for e in edges["edges"]} == {
        (None, "submit", "start"): len(verdicts),
        ("submit", "review", "await"): len(verdicts),
        ("review", "publish", "next"): approved,
        ("review", None, "cancel"): rejected,
        ("publish", "publish", "retry"): 1,
        ("publish", None, "done"): approved,
    }
    missing = gd(db_url, "graph", "cli_history.Nothing")  # no instance, no runner knows it
    assert missing.exit_code == 1 and "unknown class 'cli_history.Nothing'" in missing.output


def test_mermaid_aliases_names_it_cannot_draw_as_they_are() -> None:
    drawn = mermaid(
        [
            {"from": None, "to": "two words", "kind": "start", "count": 1},
            {"from": "two words", "to": "end", "kind": "next", "count": 1},
            {"from": "end", "to": "step_0", "kind": "next", "count": 1},
        ]
    )
    assert drawn.splitlines() == [
        "stateDiagram-v2",
        '    state "end" as step_1',
        '    state "two words" as step_2',
        "    [*] --> step_2: started (1)",
        "    step_2 --> step_1: next (1)",
        "    step_1 --> step_0: next (1)",
    ]


def test_show_lists_the_last_transitions(engine: Engine, db_url: str) -> None:
    (iid,) = run_reviews(engine, [True], flaky=1)
    text = ok(gd(db_url, "show", "r-0"))
    assert "history: last 4 recorded transition(s)" in text
    lines = [line.strip() for line in text.splitlines()]
    # "<date> <time> from -> to [kind] attempt N, X ms"
    trail = [line.split(" ", 2)[2].split(" attempt ")[0] for line in lines if " -> " in line]
    assert trail == [
        "submit -> review [await]",
        "review -> publish [next]",
        "publish -> publish [retry]",
        "publish -> done [done]",
    ]
    assert "ConnectionError: cdn unavailable" in lines
    shown = json.loads(ok(gd(db_url, "show", str(iid), "--json", "--history", "2")))
    assert [(h["from_step"], h["kind"], h["attempt"]) for h in shown["history"]] == [
        ("publish", "retry", 1),
        ("publish", "done", 2),
    ]
    assert "history:" not in ok(gd(db_url, "show", "r-0", "--history", "0"))


def test_operator_commands_are_audited_with_their_actor(engine: Engine, db_url: str) -> None:
    (iid,) = run_reviews(engine, [False], flaky=0)  # cancelled by its own step
    ok(gd(db_url, "retry", "r-0", "--actor", "alice"))
    ok(gd(db_url, "signal", "r-0", "nudge", '{"n": 1}'))
    ok(gd(db_url, "cancel", str(iid), "--reason", "done with it", "--actor", "bob"))
    ok(gd(db_url, "pause", "default", "--actor", "carol"))
    ok(gd(db_url, "resume", "default", "--actor", "carol"))
    rows = json.loads(ok(gd(db_url, "audit", "--json")))
    assert [(r["action"], r["target"], r["instance_id"], r["actor"]) for r in rows] == [
        ("resume", "default", None, "carol"),
        ("pause", "default", None, "carol"),
        ("cancel", str(iid), iid, "bob"),
        ("signal", "r-0", iid, default_actor()),
        ("retry", "r-0", iid, "alice"),
    ]
    assert rows[2]["details"] == {"reason": "done with it", "descendants": 0}
    only = json.loads(ok(gd(db_url, "audit", "--json", "--actor", "carol", "--limit", "1")))
    assert [r["action"] for r in only] == ["resume"]
    table = ok(gd(db_url, "audit", "--action", "cancel"))
    assert table.splitlines()[0].split() == [
        "ID",
        "AT",
        "ACTION",
        "TARGET",
        "INSTANCE_ID",
        "ACTOR",
        "DETAILS",
    ]
    assert len(table.splitlines()) == 2 and "done with it" in table


def test_prune_deletes_in_batches_with_one_audit_row_and_a_progress_bar(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_reviews(engine, [True, False, True], flaky=0)
    (live,) = run_reviews_live(engine)
    monkeypatch.setattr("gen_durable.cli.actions.interactive", lambda: True)
    out = ok(gd(db_url, "prune", "--older-than", "0", "--batch", "2", "--actor", "ops"))
    assert "pruning" in out and out.strip().endswith("pruned 3 finished instance(s)")
    (row,) = json.loads(ok(gd(db_url, "audit", "--json", "--action", "prune")))
    assert (row["actor"], row["details"]) == ("ops", {"older_than": 0.0, "deleted": 3})
    remaining = json.loads(ok(gd(db_url, "ls", "--json")))
    assert [r["id"] for r in remaining] == [live]
    assert len(json.loads(ok(gd(db_url, "show", str(live), "--json")))["history"]) == 1


def run_reviews_live(engine: Engine) -> list[int]:
    """One Review left awaiting its decision (live: prune keeps it and its history)."""
    with Session(engine) as s, s.begin():
        ids = [durable.insert(s, Review, correlation_key="live")]
    drain(engine)
    return ids


def test_migrate_shows_a_progress_bar_on_a_terminal(
    engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gen_durable.cli.interactive", lambda: True)
    head = migration.head()
    down = ok(gd(db_url, "migrate", "--downgrade", "0005"))
    assert "migrating" in down and down.strip().endswith(f"{head} -> 0005")
    applied: list[str] = []
    migration.upgrade_bind(engine, "0007", on_step=applied.append)
    assert applied == ["0006", "0007"]
    up = ok(gd(db_url, "migrate"))
    assert "migrating" in up and f": 0007 -> {head}\n" in up
    assert "\n  0008 (expand): " in up  # each revision applied, with its phase
    assert migration.steps("0005", "0007") == 2
    assert migration.steps("0007", "0005", downgrade=True) == 2
    assert migration.steps("0005", "-1") is None


def test_the_default_actor_names_the_user_and_host() -> None:
    user, _, host = default_actor().partition("@")
    assert user and host
