from __future__ import annotations

import os

from pytest_mi300x import affinity


def test_engine_gets_all_but_the_last_core_and_the_client_the_last() -> None:
    assert affinity.split({0, 1}) == (frozenset({0}), frozenset({1}))
    assert affinity.split({3, 0, 2, 1}) == (frozenset({0, 1, 2}), frozenset({3}))
    assert affinity.split({0}) is None
    assert affinity.cpu_list({2, 0, 1}) == "0,1,2"


def test_pinned_restores_the_affinity() -> None:
    before = os.sched_getaffinity(0)
    target = {min(before)}
    with affinity.pinned(target):
        assert os.sched_getaffinity(0) == target
    assert os.sched_getaffinity(0) == before
    with affinity.pinned(None):
        assert os.sched_getaffinity(0) == before
