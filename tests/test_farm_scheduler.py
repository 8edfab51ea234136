"""The farm's FairQueue (no Ray): known dispatch orders for round robin, priorities, the
running limit and requeue, and positions that are exactly the order pick() follows."""
import copy
import random

import pytest

from backend.farm.scheduler import FairQueue


def _fill(q: FairQueue, jobs: list[tuple[str, str, int]]) -> None:
    for job_id, user, priority in jobs:
        q.push(job_id, user, priority)


def _drain(q: FairQueue, running: dict | None = None) -> list[str]:
    out = []
    while (job := q.pick(running or {})) is not None:
        out.append(job)
    return out


def test_round_robin_between_users_first_come_first_served_within_one():
    q = FairQueue(1)
    _fill(q, [("a1", "a", 0), ("a2", "a", 0), ("a3", "a", 0), ("b1", "b", 0), ("b2", "b", 0), ("c1", "c", 0)])
    assert q.order() == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert _drain(q) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_user_who_arrives_later_is_served_before_those_already_served():
    q = FairQueue(1)
    _fill(q, [("a1", "a", 0), ("a2", "a", 0), ("a3", "a", 0)])
    assert q.pick({}) == "a1"
    q.push("b1", "b")
    assert q.order() == ["b1", "a2", "a3"]


def test_higher_priority_goes_first_across_users_then_round_robin_again():
    q = FairQueue(1)
    _fill(q, [("a1", "a", 0), ("a2", "a", 0), ("b1", "b", 0), ("b2", "b", 1), ("c1", "c", -1)])
    # b's high job first (b2 before b1: priority before arrival within a user), low last
    assert _drain(q) == ["b2", "a1", "b1", "a2", "c1"]


def test_the_running_limit_holds_a_users_jobs_back():
    q = FairQueue(2)
    _fill(q, [("a1", "a", 0), ("a2", "a", 0), ("b1", "b", 0)])
    assert q.pick({"a": 2}) == "b1"
    assert q.pick({"a": 2, "b": 1}) is None  # a is at its limit, b has nothing waiting
    assert q.pick({"a": 1, "b": 1}) == "a1"
    with pytest.raises(ValueError):
        FairQueue(0)


def test_a_requeued_job_goes_back_to_the_head_of_the_line():
    q = FairQueue(1)
    _fill(q, [("a1", "a", 0), ("a2", "a", 0), ("b1", "b", 0), ("c1", "c", 0)])
    seq = q.info("a1")[2]
    assert q.pick({}) == "a1"
    q.push("a1", "a", 0, seq=seq)  # its worker died
    assert q.order() == ["a1", "b1", "c1", "a2"]


def test_cancel_removes_only_that_job():
    q = FairQueue(1)
    _fill(q, [("a1", "a", 0), ("a2", "a", 0), ("b1", "b", 0)])
    assert q.remove("a1") and not q.remove("a1") and "a1" not in q
    assert q.order() == ["a2", "b1"] and len(q) == 2 and q.waiting() == {"a": 1, "b": 1}


def test_positions_are_the_order_pick_follows_for_random_queues():
    rng = random.Random(7)
    for _ in range(50):
        q = FairQueue(1)
        for i in range(rng.randint(1, 40)):
            q.push(f"j{i}", f"u{rng.randint(0, 5)}", rng.choice([-1, 0, 0, 1]))
            if rng.random() < 0.3:
                q.pick({})
        assert q.order() == _drain(copy.deepcopy(q))
