"""A bounded thread pool over a stream of items, for the project side's many small requests.

Backfill, drift and deletion sync each make one Studio request per sample; ``bounded_map``
runs them on a few threads while reading the stream lazily, so memory stays flat however
many samples a project holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int
) -> Iterator[tuple[T, R | Exception]]:
    """``fn`` over ``items`` on ``workers`` threads, results in input order, at most
    ``2 * workers`` in flight (memory stays flat however many items stream in). An
    exception is returned in place of the result. Closing the iterator early cancels
    what has not started and waits for what has."""
    if workers <= 1:
        for item in items:
            try:
                yield item, fn(item)
            except Exception as exc:
                yield item, exc
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="studio")
    window: deque[tuple[T, Future[R]]] = deque()

    def pop() -> tuple[T, R | Exception]:
        item, future = window.popleft()
        try:
            return item, future.result()
        except Exception as exc:
            return item, exc

    try:
        for item in items:
            window.append((item, pool.submit(fn, item)))
            if len(window) >= 2 * workers:
                yield pop()
        while window:
            yield pop()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
