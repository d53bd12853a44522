"""fanout.in_order: the fleet-wide reads (run's idle tick, status, list, report, metrics) work on
several policies at once, yet answer in the fleet's order, hold few results and stop on an error."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from drtool.app.fanout import FOLDER_READERS, READERS, in_order, readers


def test_results_come_in_the_order_given_however_the_work_finishes():
    done_late = threading.Event()

    def work(i: int) -> int:
        if i == 0:  # the first item finishes last: the second has to be under way meanwhile
            assert done_late.wait(10)
        if i == 1:
            done_late.set()
        return i * 10

    assert list(in_order(work, range(12), workers=3)) == [i * 10 for i in range(12)]


def test_at_most_twice_the_workers_wait_to_be_taken():
    started = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        return i

    results = in_order(work, range(100), workers=4)
    assert next(results) == 0
    results.close()  # the caller stops reading: nothing new is started
    assert len(started) <= 2 * 4 + 1


def test_an_error_is_raised_at_its_items_turn_after_the_results_before_it():
    def work(i: int) -> int:
        if i == 5:
            raise ValueError(f"item {i}")
        return i

    got = []
    with pytest.raises(ValueError, match="item 5"):
        for r in in_order(work, range(20), workers=4):
            got.append(r)
    assert got == [0, 1, 2, 3, 4]


def test_one_worker_or_one_item_runs_in_the_callers_thread():
    me = threading.get_ident()
    assert list(in_order(lambda i: threading.get_ident(), range(3), workers=1)) == [me] * 3
    assert list(in_order(lambda i: threading.get_ident(), [7], workers=8)) == [me]


def policy(url: str, *copies: str) -> SimpleNamespace:
    return SimpleNamespace(storage=SimpleNamespace(url=url), copies=[SimpleNamespace(url=c) for c in copies])


def test_a_fleet_of_folder_stores_is_read_by_fewer_threads_than_one_reached_over_the_network():
    """A folder store's reads hit the page cache: more threads only fight over the GIL. Any store
    or copy target over the network (S3) needs the overlap."""
    assert FOLDER_READERS < READERS
    folders = [policy("file:///srv/a"), policy("file:///srv/b", "file:///mnt/c")]
    assert readers(folders) == FOLDER_READERS
    assert readers([*folders, policy("s3://bucket/x")]) == READERS
    assert readers([policy("file:///srv/a", "s3://bucket/dr")]) == READERS
