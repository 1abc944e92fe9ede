"""The one conversion of settings, measurements and scores to plain JSON values."""

from __future__ import annotations

import numpy as np


def to_jsonable(value):
    """Dicts, lists and tuples walked through; NumPy scalars and arrays as Python numbers and lists;
    strings, numbers, booleans and None as they are; anything else (paths, enums) as its string, so
    the result also reads back with ``torch.load(weights_only=True)``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
