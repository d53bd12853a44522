"""Work on many policies at once for the fleet-wide reads (run's idle tick, status, list, report):
each policy is a few store requests that mostly wait on the network, so a handful of threads
overlap the waits while the results still come back in the order the policies were given."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

READERS = 8  # policies read at once: enough to hide a store's latency, few enough to share 2 cores


def in_order(fn: Callable[[T], R], items: Iterable[T], workers: int = READERS, name: str = "read") -> Iterator[R]:
    """fn(item) for each item, up to `workers` at a time, yielded in the items' order. At most
    2 x workers results wait to be taken, so a streamed fleet listing holds a few policies' rows,
    not the fleet's. An exception from fn is raised when its item's turn comes; nothing new is
    started after it, or after the caller stops reading."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    todo = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        waiting: deque[Future[R]] = deque(pool.submit(fn, x) for x in islice(todo, 2 * workers))
        try:
            while waiting:
                result = waiting.popleft().result()
                waiting.extend(pool.submit(fn, x) for x in islice(todo, 1))  # the next item, if any
                yield result
        finally:
            for f in waiting:
                f.cancel()
