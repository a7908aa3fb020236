"""The fault-injection hook: off by default, rules parsed from the environment, counts."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time

import pytest

from gen_durable import faults


def test_faults_are_off_unless_asked_for() -> None:
    assert faults.ENV not in os.environ
    assert faults.active is None
    faults.hit("commit")  # a no-op when off


def test_every_point_a_rule_names_is_known() -> None:
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.Rule("nowhere", "kill")
    with pytest.raises(ValueError, match="unknown fault action"):
        faults.Rule("commit", "explode")
    with pytest.raises(ValueError, match="probability"):
        faults.Rule("commit", "raise", probability=2.0)


def test_rules_parse_from_the_environment_syntax() -> None:
    rules, seed = faults.parse(
        "after_claim:kill:0.1; commit:raise=deadlock:n=3:after=2, in_step:stall:s=0.5:seed=7"
    )
    assert [(r.point, r.action) for r in rules] == [
        ("after_claim", "kill"),
        ("commit", "raise"),
        ("in_step", "stall"),
    ]
    assert rules[0].probability == 0.1
    assert (rules[1].error, rules[1].count, rules[1].after) == ("deadlock", 3, 2)
    assert rules[2].seconds == 0.5 and seed == 7
    with pytest.raises(ValueError, match="unknown fault options"):
        faults.parse("commit:raise:x=1")
    with pytest.raises(ValueError, match="point:action"):
        faults.parse("commit")


def test_a_rule_fires_after_its_skipped_hits_and_at_most_count_times() -> None:
    rule = faults.Rule("gc", "raise", count=2, after=1)
    with faults.inject(rule) as plan:
        outcomes = []
        for _ in range(5):
            try:
                faults.hit("gc")
                outcomes.append("pass")
            except faults.InjectedFault:
                outcomes.append("raise")
        faults.hit("reaper")  # no rule there
    assert outcomes == ["pass", "raise", "raise", "pass", "pass"]
    assert (rule.hits, rule.fired, plan.fired("gc"), plan.hits("gc")) == (5, 2, 2, 5)
    assert faults.active is None


def test_probability_draws_are_seeded() -> None:
    def draws() -> int:
        with faults.inject("heartbeat:raise:p=0.3", seed=11) as plan:
            for _ in range(200):
                with contextlib.suppress(faults.InjectedFault):
                    faults.hit("heartbeat")
            return plan.fired()

    first = draws()
    assert first == draws()
    assert 20 < first < 120


def test_raise_takes_a_registered_error_or_a_factory_given_the_call_site_context() -> None:
    seen: list[object] = []

    def factory(context: object) -> BaseException:
        seen.append(context)
        return KeyError("from the factory")

    faults.register_error("test-error", factory)
    with faults.inject("signal:raise=test-error"), pytest.raises(KeyError):
        faults.hit("signal", "the connection")
    assert seen == ["the connection"]
    rule = faults.Rule("claim", "raise", error=TimeoutError("given"))
    with faults.inject(rule), pytest.raises(TimeoutError, match="given"):
        faults.hit("claim")
    with faults.inject("claim:raise=never-registered"), pytest.raises(faults.InjectedFault):
        faults.hit("claim")


def test_stall_waits_for_an_event_or_sleeps() -> None:
    release = threading.Event()
    done = threading.Event()
    with faults.inject(faults.Rule("in_step", "stall", until=release)):
        thread = threading.Thread(target=lambda: (faults.hit("in_step"), done.set()))
        thread.start()
        assert not done.wait(0.2)
        release.set()
        thread.join(5)
    assert done.is_set()
    with faults.inject("in_step:stall:s=0.05"):
        started = time.monotonic()
        faults.hit("in_step")
    assert time.monotonic() - started >= 0.05


def test_injection_does_not_nest() -> None:
    with (
        faults.inject("gc:raise"),
        pytest.raises(RuntimeError, match="already active"),
        faults.inject("gc:raise"),
    ):
        pass


def test_a_child_process_reads_its_faults_from_the_environment_and_kill_is_a_sigkill() -> None:
    code = (
        "from gen_durable import faults\n"
        "assert faults.active is not None\n"
        "faults.hit('after_claim')\n"
        "faults.hit('after_claim')\n"
        "print('survived', flush=True)\n"
    )
    env = {**os.environ, faults.ENV: "after_claim:kill:after=1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert proc.returncode == -9 and b"survived" not in proc.stdout
