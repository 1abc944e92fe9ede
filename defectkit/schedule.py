"""A learning-rate schedule that spans a number of steps, a time budget, or whichever ends first.

Training is over when either bound is reached: ``progress`` is the larger of the share of steps
done and the share of the budget spent, and the rate follows a short linear warm-up, then a cosine
from the peak down to ``floor`` times the peak at progress 1. So a run cut by its budget still ends
at its low rate, as a run of a fixed number of steps does. The time spent is carried across a
resumed run (``elapsed`` is saved with the training state).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class BudgetSchedule:
    peak: float
    steps: int  # the most steps
    seconds: float = 0.0  # the time budget; 0: none
    warmup: float = 0.03  # share of the progress spent warming up
    floor: float = 0.02  # the last rate, relative to the peak
    step: int = 0
    elapsed: float = 0.0  # seconds spent before this process started (a resumed run)
    reserve: float = 0.0  # seconds kept back at the end of the budget (e.g. for a final validation)
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)
    _started: float = field(default=-1.0, repr=False)

    def __post_init__(self):
        self._started = self.clock()

    def spent(self) -> float:
        return self.elapsed + self.clock() - self._started

    def progress(self) -> float:
        by_steps = self.step / max(self.steps, 1)
        if self.seconds <= 0:
            return by_steps
        return max(by_steps, self.spent() / max(self.seconds - self.reserve, 1e-9))

    def done(self) -> bool:
        return self.progress() >= 1.0

    def rate(self) -> float:
        progress = min(self.progress(), 1.0)
        if progress < self.warmup:
            return self.peak * max(progress / self.warmup, 0.01)
        cosine = 0.5 * (1 + math.cos(math.pi * (progress - self.warmup) / (1 - self.warmup)))
        return self.peak * (self.floor + (1 - self.floor) * cosine)

    def apply(self, optimizer) -> float:
        """Set the optimizer's rate for the next step; the rate set."""
        rate = self.rate()
        for group in optimizer.param_groups:
            group["lr"] = rate
        return rate

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed": self.spent()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self._started = self.clock()
