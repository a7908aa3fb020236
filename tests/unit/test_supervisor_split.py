"""How ``gen-durable run --processes N`` splits the queues' concurrency across processes."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable.errors import ConfigurationError
from gen_durable.supervised import split_concurrency
from gen_durable.supervisor import Supervisor


def test_each_queue_is_split_evenly_and_the_remainders_take_turns() -> None:
    assert split_concurrency({"default": 10, "mail": 3}, 4) == [
        {"default": 3, "mail": 1},
        {"default": 3},
        {"default": 2, "mail": 1},
        {"default": 2, "mail": 1},
    ]
    # Small queues land on different processes, so that each has one.
    assert split_concurrency({"a": 1, "b": 1, "c": 1}, 3) == [{"a": 1}, {"b": 1}, {"c": 1}]
    assert split_concurrency({"default": 10}, 1) == [{"default": 10}]


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 40), min_size=1),
    st.integers(1, 60),
)
def test_the_shares_add_up_and_every_process_serves_a_queue(
    queues: dict[str, int], processes: int
) -> None:
    if processes > sum(queues.values()):
        with pytest.raises(ConfigurationError, match="would serve no queue"):
            split_concurrency(queues, processes)
        return
    shares = split_concurrency(queues, processes)
    assert len(shares) == processes
    for name, total in queues.items():
        assert sum(share.get(name, 0) for share in shares) == total
        assert max(s.get(name, 0) for s in shares) - min(s.get(name, 0) for s in shares) <= 1
    totals = [sum(share.values()) for share in shares]
    assert min(totals) >= 1 and max(totals) - min(totals) <= 1
    assert all(n >= 1 for share in shares for n in share.values())


def test_bad_supervisor_options_are_refused_before_any_process_starts() -> None:
    dsn = "postgresql+psycopg://app@db/app"
    with pytest.raises(ConfigurationError, match="exactly one of dsn and app"):
        Supervisor({"default": 2}, processes=2)
    with pytest.raises(ConfigurationError, match="may not set"):
        Supervisor({"default": 2}, processes=2, dsn=dsn, runner_options={"node_id": "x"})
    with pytest.raises(ConfigurationError, match="picklable"):
        Supervisor(
            {"default": 2}, processes=2, dsn=dsn, runner_options={"observer": lambda r: None}
        )
    with pytest.raises(ConfigurationError, match="max_restarts"):
        Supervisor({"default": 2}, processes=2, dsn=dsn, max_restarts=-1)
    supervisor = Supervisor({"default": 5, "mail": 1}, processes=2, dsn=dsn)
    assert supervisor.shares == [{"default": 3}, {"default": 2, "mail": 1}]
    assert pickle.loads(pickle.dumps(supervisor._children[0].spec)).queues == {"default": 3}
