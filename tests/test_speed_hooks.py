"""The speed hooks: stage timings and one-thread compute."""

import time

import pytest

from defectkit.timing import Timings, stage


def test_timings_add_up_seconds_and_calls_per_stage():
    timings = Timings()
    for _ in range(3):
        with timings.stage("a"):
            time.sleep(0.01)
    with stage(timings, "b"):
        pass
    with stage(None, "c"):  # no Timings: nothing recorded, nothing fails
        pass
    assert list(timings.seconds) == ["a", "b"] and timings.calls == {"a": 3, "b": 1}
    assert timings.seconds["a"] >= 0.03 and timings.total == pytest.approx(sum(timings.seconds.values()))
    assert sum(timings.shares().values()) == pytest.approx(1) and timings.shares()["a"] > 0.5
    with pytest.raises(ValueError):
        with timings.stage("d"):
            raise ValueError("a failing stage still counts")
    assert timings.calls["d"] == 1


def test_use_one_thread_limits_torch_openmp_and_blas():
    import torch
    from threadpoolctl import threadpool_info

    from defectkit.threads import use_one_thread

    from threadpoolctl import ThreadpoolController

    before_torch, controller = torch.get_num_threads(), ThreadpoolController()
    before = [(pool, pool.num_threads) for pool in controller.lib_controllers]
    try:
        use_one_thread()
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:  # the rest of the test run keeps its threads
        torch.set_num_threads(before_torch)
        for pool, threads in before:
            pool.set_num_threads(threads)
