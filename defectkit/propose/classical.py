"""An OpenCV proposer for when no SAM2 checkpoint is at hand, tuned on magnetic-tile images.

Three channels; the first two are robust z-score maps thresholded with hysteresis (a region needs
a few strong pixels and grows over the weaker ones around them):

- ``dark``: the image minus its median-filtered background, at full resolution. Finds what is
  darker than its surroundings and smaller than the median window: pores, cracks, chips.
- ``large``: on a downscaled, smoothed image, the deviation from the image's column profile
  (ground surfaces carry brightness bands along the grinding direction; their column median is
  the background). For large regions brighter or darker than the surface around them (stains,
  broken-off corners).
- ``band``: uneven grinding leaves a band across the part whose brightness and streak texture
  differ from the rest. Rows are described by their mean (column profile removed) and streak
  strength; the one split of the rows into a top and a bottom part that differ most is proposed
  (the smaller part, across the full width) when the difference reaches ``band_threshold``.

Each connected region becomes one proposal, scored by its mean |z| (band: its split statistic);
the strongest ``max_proposals`` are kept. The defaults were tuned with
``benchmarks/tune_classical.py`` on the train part of the seeded magnetic-tile split; on the
held-out part (``benchmarks/proposers.py``) they find 91 % of pores, all cracks, about half the
breaks and a third of the uneven bands (IoU >= 0.3), but no frayed edges, with 1.6 false
proposals per defect-free image. ``large`` is off by default: on magnetic tiles it proposed more
false regions than it found defects.
"""

from __future__ import annotations

import cv2
import numpy as np

from defectkit.images import gray
from defectkit.propose.base import Proposer, Prompts


def robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 * median absolute deviation): a z-score that outliers do not inflate."""
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    return (values - median) / max(spread, 1e-3)


def hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The connected regions of ``weak`` that hold at least one pixel of ``strong``."""
    count, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[np.unique(labels[strong & weak])] = True
    keep[0] = False
    return keep[labels]


def _odd(value: float) -> int:
    value = max(3, int(round(value)))
    return value if value % 2 else value + 1


class ClassicalProposer(Proposer):
    name = "classical"

    def __init__(
        self,
        dark_window: int = 31,
        dark_blur: float = 1.0,
        dark_threshold: float = 7.5,
        dark_grow: float = 3.0,
        dark_min_area: int = 45,
        large_side: int = 96,
        large_blur: float = 2.0,
        large_threshold: float = 3.5,
        large_grow: float = 2.5,
        large_min_fraction: float = 0.005,
        large_polarity: str = "off",
        band_threshold: float | None = 10.0,
        band_side: int = 96,
        band_min_fraction: float = 0.12,
        max_fraction: float = 0.5,
        max_proposals: int = 4,
    ):
        super().__init__()
        if large_polarity not in ("dark", "bright", "both", "off"):
            raise ValueError(f"large_polarity must be dark, bright, both or off, got {large_polarity!r}")
        self.dark_window = dark_window
        self.dark_blur = dark_blur
        self.dark_threshold = dark_threshold
        self.dark_grow = dark_grow
        self.dark_min_area = dark_min_area
        self.large_side = large_side
        self.large_blur = large_blur
        self.large_threshold = large_threshold
        self.large_grow = large_grow
        self.large_min_fraction = large_min_fraction
        self.large_polarity = large_polarity
        self.band_threshold = band_threshold
        self.band_side = band_side
        self.band_min_fraction = band_min_fraction
        self.max_fraction = max_fraction
        self.max_proposals = max_proposals
        self._proposals: list[np.ndarray] = []

    def config(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("image", "image_path")}

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        g = gray(image)
        scored = self._dark(g) + self._large(g) + self._band(g)
        limit = self.max_fraction * g.size
        scored = [(score, mask) for score, mask in scored if mask.sum() <= limit]
        scored.sort(key=lambda item: -item[0])
        self._proposals = [mask for _, mask in scored[: self.max_proposals]]

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        return [mask.copy() for mask in self._proposals]

    def _dark(self, g: np.ndarray) -> list[tuple[float, np.ndarray]]:
        background = cv2.medianBlur(g, _odd(self.dark_window)).astype(np.float32)
        smooth = cv2.GaussianBlur(g.astype(np.float32), (0, 0), self.dark_blur) if self.dark_blur > 0 else g.astype(np.float32)
        z = -robust_z(smooth - background)  # darker than the background = positive
        mask = hysteresis(z > self.dark_threshold, z > self.dark_grow)
        return _components(mask, z, self.dark_min_area)

    def _large(self, g: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.large_polarity == "off":
            return []
        height, width = g.shape
        scale = min(1.0, self.large_side / min(height, width))
        small = cv2.resize(g, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), self.large_blur)
        z = robust_z(small - np.median(small, axis=0, keepdims=True))
        polarities = {"dark": (-1,), "bright": (1,), "both": (-1, 1)}[self.large_polarity]
        out = []
        for sign in polarities:
            signed = sign * z
            mask_small = hysteresis(signed > self.large_threshold, signed > self.large_grow)
            if not mask_small.any():
                continue
            mask = cv2.resize(mask_small.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
            signed_full = cv2.resize(signed, (width, height), interpolation=cv2.INTER_LINEAR)
            out += _components(mask, signed_full, max(1, int(self.large_min_fraction * height * width)))
        return out


    def _band(self, g: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.band_threshold is None:
            return []
        height, width = g.shape
        scale = min(1.0, self.band_side / min(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(g.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        streaks = cv2.resize(np.abs(cv2.Sobel(g.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3)), size, interpolation=cv2.INTER_AREA)
        rows = np.stack([(small - np.median(small, axis=0, keepdims=True)).mean(axis=1), np.log1p(streaks).mean(axis=1)], axis=1)
        rows = np.stack([robust_z(column) for column in rows.T], axis=1)
        n = len(rows)
        margin = max(2, int(self.band_min_fraction * n))
        if n <= 2 * margin:
            return []
        cumulative = np.cumsum(rows, axis=0)
        splits = np.arange(margin, n - margin)
        top = cumulative[splits - 1] / splits[:, None]
        bottom = (cumulative[-1] - cumulative[splits - 1]) / (n - splits)[:, None]
        statistic = np.linalg.norm(top - bottom, axis=1) * np.sqrt(splits * (n - splits) / n)
        best = int(statistic.argmax())
        if statistic[best] < self.band_threshold:
            return []
        split, row = int(splits[best]), int(round(splits[best] / scale))
        mask = np.zeros((height, width), dtype=bool)
        if split < n - split:
            mask[:row] = True
        else:
            mask[row:] = True
        return [(float(statistic[best]), mask)]


def _components(mask: np.ndarray, z: np.ndarray, min_area: int) -> list[tuple[float, np.ndarray]]:
    """(mean z, full-size mask) of each 8-connected region of at least ``min_area`` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for index in range(1, count):
        x, y, w, h, area = stats[index]
        if area < min_area:
            continue
        inside = labels[y : y + h, x : x + w] == index
        region = np.zeros(mask.shape, dtype=bool)
        region[y : y + h, x : x + w] = inside
        out.append((float(z[y : y + h, x : x + w][inside].mean()), region))
    return out
