"""Work on a stream of items: run a step a few items ahead on a worker thread, and group items.

Used by :meth:`defectkit.pipeline.DefectClassifier.stream`: while the caller's thread embeds and
classifies one group of images, a worker thread reads and proposes the next ones. OpenCV, NumPy
and torch release the GIL in their heavy calls, so the two threads use two cores.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

Item = TypeVar("Item")
Output = TypeVar("Output")


def ahead(function: Callable[[Item], Output], items: Iterable[Item], depth: int, workers: int = 1) -> Iterator[Output]:
    """``function(item)`` for each item, in order, computed up to ``depth`` items ahead of the
    consumer on ``workers`` threads (0: on the caller's thread, nothing ahead). ``function`` should
    not raise: an exception ends the stream where it happened."""
    if workers <= 0:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="defectkit") as pool:
        pending = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the consumer stopped early: do not compute what nobody will read
            for future in pending:
                future.cancel()


def chunked(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Lists of ``size`` consecutive items (the last one may be shorter)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
