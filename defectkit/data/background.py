"""Background regions: realistic non-defect proposals for the classifier to learn to reject.

A fixed square or disc would let a classifier learn "this shape means background", so each
background region takes the shape of a real defect region from the same data set (turned and
mirrored at random) placed at a random spot where it covers no real defect.
"""

from __future__ import annotations

import numpy as np

from defectkit.geometry import Region


class ShapePool:
    """Shapes (bounding-box masks) of the defect regions seen so far, in the order seen."""

    def __init__(self):
        self.shapes: list[np.ndarray] = []

    def add(self, region: Region) -> None:
        self.shapes.append(region.mask.copy())

    def __len__(self) -> int:
        return len(self.shapes)


def _random_blob(rng: np.random.Generator, max_side: int) -> np.ndarray:
    """Fallback when a data set has no defect shapes at all: an irregular star-shaped blob."""
    import cv2

    side = int(rng.integers(8, max(9, max_side // 3)))
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    radii = rng.uniform(0.3, 0.5, 9) * side
    stretch = rng.uniform(0.3, 1.0)
    points = np.stack([side / 2 + radii * np.cos(angles), side / 2 + stretch * radii * np.sin(angles)], axis=1)
    canvas = np.zeros((side, side), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    ys, xs = np.nonzero(canvas)
    return canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(bool)


def sample_background_regions(
    pool: ShapePool,
    image_shape: tuple[int, int],
    count: int,
    rng: np.random.Generator,
    avoid: np.ndarray | None = None,
    tries: int = 50,
) -> list[Region]:
    """Up to ``count`` regions with real defect shapes at random spots of an image of ``image_shape``,
    none overlapping ``avoid`` (a boolean mask of the real defects) or each other."""
    height, width = image_shape[:2]
    taken = np.zeros((height, width), dtype=bool) if avoid is None else avoid.copy()
    regions: list[Region] = []
    for _ in range(count):
        for _ in range(tries):
            shape = pool.shapes[int(rng.integers(len(pool)))] if len(pool) else _random_blob(rng, min(height, width))
            shape = np.rot90(shape, int(rng.integers(4)))
            if rng.random() < 0.5:
                shape = shape[:, ::-1]
            h, w = shape.shape
            if h >= height or w >= width:
                continue
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            if (taken[y : y + h, x : x + w] & shape).any():
                continue
            taken[y : y + h, x : x + w] |= shape
            regions.append(Region(x, y, np.ascontiguousarray(shape)))
            break
    return regions
