"""The learning-rate schedule over steps or a time budget: it ends at its low rate either way."""

from functools import partial

import pytest

from defectkit.schedule import BudgetSchedule as RealSchedule


@pytest.fixture
def clock():
    return {"t": 1000.0}


@pytest.fixture
def BudgetSchedule(clock):  # noqa: N802 - the class, on a clock the test moves
    return partial(RealSchedule, clock=lambda: clock["t"])


def test_a_budget_ends_the_schedule_at_its_low_rate(clock, BudgetSchedule):
    schedule = BudgetSchedule(peak=1.0, steps=10_000, seconds=100.0, warmup=0.1, floor=0.02)
    assert schedule.rate() == pytest.approx(0.01)  # the first step of the warm-up
    clock["t"] += 10  # a tenth of the budget: the warm-up is over
    assert schedule.rate() == pytest.approx(1.0)
    clock["t"] += 45
    assert 0.4 < schedule.rate() < 0.6 and not schedule.done()
    clock["t"] += 45
    assert schedule.done() and schedule.rate() == pytest.approx(0.02)
    assert schedule.step == 0  # the steps never bound it here


def test_steps_end_it_when_they_come_first_and_a_reserve_shortens_the_budget(clock, BudgetSchedule):
    by_steps = BudgetSchedule(peak=2.0, steps=4, seconds=3600.0, warmup=0.0, floor=0.0)
    rates = []
    while not by_steps.done():
        rates.append(by_steps.rate())
        by_steps.advance()
    assert len(rates) == 4 and rates[0] == pytest.approx(2.0) and rates == sorted(rates, reverse=True)
    reserved = BudgetSchedule(peak=1.0, steps=10**6, seconds=100.0, reserve=20.0)
    clock["t"] += 80
    assert reserved.done()


def test_a_resumed_schedule_carries_the_time_already_spent(clock, BudgetSchedule):
    first = BudgetSchedule(peak=1.0, steps=100, seconds=100.0)
    clock["t"] += 30
    first.advance()
    second = BudgetSchedule(peak=1.0, steps=100, seconds=100.0)
    second.load_state_dict(first.state_dict())
    assert second.step == 1 and second.progress() == pytest.approx(0.3)
