"""One compute thread per process for torch, OpenMP and BLAS.

defectkit's CPU work comes in small pieces: a handful of crops per image, a few rows through the
classifier, PCA and logistic regressions on a few thousand crops. Thread pools gain little on such
pieces, and on busy cores their spin-waiting threads cost a lot: on a 2-core machine with another
process busy on one core, a per-image crop batch through the backbone, the kNN of one image's
classification and ``train``'s PCA all ran many times slower with torch's, scikit-learn's OpenMP
and OpenBLAS's default threads. Scale out with processes instead.

Coarse pieces are another matter: the folds of a stack's out-of-fold fits are whole XGBoost and
logistic-regression fits, and run side by side on threads (:func:`parallel_folds`), each on its one
compute thread: ``train``'s fit about 1.5x faster on 2 cores (``benchmarks/speed.py --only 6``),
the same model.
"""

from __future__ import annotations

import os


def use_one_thread() -> None:
    """Limit torch and every OpenMP / BLAS runtime loaded so far (and those torch, NumPy,
    scikit-learn and OpenCV bring) to one thread, for the rest of the process."""
    use_threads(1)


def use_threads(threads: int) -> None:
    """As :func:`use_one_thread`, to ``threads`` threads (a Ray actor's share of the cores)."""
    import cv2  # noqa: F401  (its OpenBLAS)
    import sklearn.base  # noqa: F401  (its OpenMP runtime)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(max(1, int(threads)))
    threadpool_limits(max(1, int(threads)))


def cpu_count() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_folds(jobs: int | None = None):
    """A context in which scikit-learn's fold loops (``cross_val_predict`` in each stack's fit) run
    on ``jobs`` threads (None: one per CPU). XGBoost, scikit-learn's solvers and BLAS let go of the
    GIL while they work; the fitted models are the same as one fold after another."""
    from joblib import parallel_config

    return parallel_config(backend="threading", n_jobs=jobs or cpu_count())
