"""TensorBoard scalars for the training commands, when the optional ``tensorboard`` is installed."""

from __future__ import annotations

import warnings
from pathlib import Path


def tensorboard_writer(log_dir: str | Path | None, warn: bool = True):
    """A ``SummaryWriter`` writing to ``log_dir``, or None (no folder, or tensorboard missing: a
    warning with ``warn``, since the user asked for a log)."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if warn:
            warnings.warn(f"TensorBoard log {log_dir} not written: tensorboard is not installed (pip install tensorboard)", stacklevel=2)
        return None
    return SummaryWriter(str(log_dir))
