"""Work on many policies at once for the fleet-wide reads (run's idle tick, status, list, report):
each policy is a few store requests that mostly wait on the network, so a handful of threads
overlap the waits while the results still come back in the order the policies were given."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")
R = TypeVar("R")

READERS = 8  # policies read at once: enough to hide a store's latency, few enough to share 2 cores
# ... when every store is a folder: its reads rarely wait (the page cache), so more threads only
# fight over the GIL (a 200-policy folder report: 2.5 s with 8, 2.1 s with 2, 1.8 s with 1); two
# still overlap a disk's or a network mount's waits
FOLDER_READERS = 2


def readers(policies: Iterable[Any]) -> int:
    """How many of these policies to read at once: FOLDER_READERS when each one's store and copy
    targets are folders, READERS when any is reached over the network."""
    urls = (u for p in policies for u in (p.storage.url, *(c.url for c in p.copies)))
    return FOLDER_READERS if all(urlparse(u).scheme == "file" for u in urls) else READERS


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
