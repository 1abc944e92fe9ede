"""One compute thread per process for torch, OpenMP and BLAS.

defectkit's CPU work comes in small pieces: a handful of crops per image, a few rows through the
classifier, PCA and logistic regressions on a few thousand crops. Thread pools gain little on such
pieces, and on busy cores their spin-waiting threads cost a lot. Measured on a 2-core machine with
another process busy on one core: a per-image crop batch through the backbone 20x slower with
torch's default threads; the kNN of one image's classification 15x slower and ``train``'s model
fit 2x slower (its PCA 20x) with scikit-learn's OpenMP and OpenBLAS at 2 threads. Scale out with
processes instead.
"""

from __future__ import annotations


def use_one_thread() -> None:
    """Limit torch and every OpenMP / BLAS runtime loaded so far (and those torch, NumPy,
    scikit-learn and OpenCV bring) to one thread, for the rest of the process."""
    import cv2  # noqa: F401  (its OpenBLAS)
    import sklearn.base  # noqa: F401  (its OpenMP runtime)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
