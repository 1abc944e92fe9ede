"""Fixed-size square crops centred on a region, with context around it and the region's mask."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from defectkit.geometry import Region


@dataclass(frozen=True)
class CropSpec:
    """How crops are cut: ``size`` px output, ``padding`` of context on each side (as a share of
    the region's longer side), and at least ``min_side`` source pixels so tiny defects keep context."""

    size: int = 128
    padding: float = 0.25
    min_side: int = 32

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f"crop size must be at least 8 px, got {self.size}")
        if self.padding < 0:
            raise ValueError(f"crop padding must be >= 0, got {self.padding}")


def crop_window(region: Region, spec: CropSpec) -> tuple[int, int, int]:
    """(x0, y0, side) of the square source window for a region; it may reach outside the image."""
    side = max(spec.min_side, math.ceil(max(region.w, region.h) * (1 + 2 * spec.padding)))
    x0 = int(math.floor(region.x + region.w / 2 - side / 2))
    y0 = int(math.floor(region.y + region.h / 2 - side / 2))
    return x0, y0, side


def _cut(array: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """A side x side window of ``array`` at (x0, y0); parts outside the array are zero."""
    out = np.zeros((side, side) + array.shape[2:], dtype=array.dtype)
    height, width = array.shape[:2]
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(width, x0 + side), min(height, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def crop_region(image: np.ndarray, region: Region, spec: CropSpec = CropSpec()) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``image`` around ``region``: an RGB uint8 (size, size, 3) crop and a uint8 0/255 mask."""
    x0, y0, side = crop_window(region, spec)
    crop = _cut(image, x0, y0, side)
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[region.y - y0 : region.y - y0 + region.h, region.x - x0 : region.x - x0 + region.w] = region.mask * 255
    interpolation = cv2.INTER_AREA if side > spec.size else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (spec.size, spec.size), interpolation=interpolation)
    mask = cv2.resize(mask, (spec.size, spec.size), interpolation=cv2.INTER_NEAREST)
    if crop.ndim == 2:
        crop = np.repeat(crop[:, :, None], 3, axis=2)
    return crop, mask
