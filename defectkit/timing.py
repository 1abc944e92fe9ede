"""Where the time goes: wall seconds per named stage, added up over many calls.

    timings = Timings()
    classify_images(paths, out, classifier, timings=timings)
    print(timings.shares())   # {"read": 0.03, "propose": 0.2, ...}

Functions that take ``timings=None`` wrap their stages in :func:`stage`; without a Timings object
it costs one ``nullcontext``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict


class Timings:
    """Seconds and call counts per stage (in the order the stages were first seen). Stages may run
    on several threads at once (see :mod:`defectkit.streaming`): then their seconds add up to more
    than the wall time."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def shares(self) -> dict[str, float]:
        """Each stage's share of the summed time (0 to 1)."""
        total = self.total or 1.0
        return {name: seconds / total for name, seconds in self.seconds.items()}


def stage(timings: Timings | None, name: str):
    """``timings.stage(name)``, or a no-op when ``timings`` is None."""
    return contextlib.nullcontext() if timings is None else timings.stage(name)
