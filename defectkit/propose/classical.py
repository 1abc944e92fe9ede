"""An OpenCV proposer for when no SAM2 checkpoint is at hand, tuned on magnetic-tile images.

Five channels each give scored regions. A score is the region's strength over its channel's own
threshold, so the channels can be ranked together: mean z over the growing threshold for the
hysteresis channels, contrast over the minimum contrast, step over the band threshold.

- ``dark``: the image minus its median-filtered background, as a robust z-score map thresholded
  with hysteresis (a region needs a few strong pixels and grows over the weaker ones around
  them). Finds what is darker than its surroundings and smaller than the median window: pores,
  cracks, small chips. A region is kept when it is ``dark_min_contrast`` darker than a ring
  around it (``ring_contrast``): texture and grinding marks pass the z threshold but are faint.
- ``large``: on a downscaled, smoothed image, the deviation from a separable background
  (log image = row profile + column profile, fitted with medians: ground surfaces carry
  brightness bands along the grinding direction, lighting falls off along the other), with
  hysteresis. For large dark regions: chipped-off pieces, stains. A region is kept only when it
  is at least ``large_min_contrast`` darker than a ring around it (``ring_contrast``).
- ``edge``: deviations of the part's border from its smoothed outline (``border_deviation``).
  Seen from each side of the image, the part's outline (per row, the first pixel brighter than
  ``edge_ratio`` times the row's median) is smoothed by a morphological opening over
  ``edge_window`` of the side, which removes inward bumps; where the outline lies ``edge_depth``
  or more deeper than its smoothed version, the pixels between the two are a missing chunk: a
  chipped-off or frayed edge. This works whether the part fills the image (its border is the
  image's) or lies on a darker background. A chunk is kept when it is ``edge_min_contrast``
  darker than a ring around it and does not touch two sides of the image (at a corner, a wider
  dark margin is far more often the part's rounded or shaded corner than a chip).
- ``smooth``: regions where the grinding streaks are missing (unground or frayed patches):
  the log streak energy (|d/dx|) over the log brightness, downscaled and smoothed, below its
  ``smooth_reference`` percentile by ``smooth_threshold`` robust spreads, with hysteresis.
- ``band``: uneven grinding leaves a band across the part whose brightness and streak texture
  change abruptly at a row. Rows are described by their median brightness (column profile
  removed) and median log streak energy; the sharpest step between the ``band_rows`` rows above
  and below a row, in units of the typical row-to-row change, is the band's edge when it
  reaches ``band_threshold``, and the smaller part (with ``band_sides="both"``, each part) is
  proposed across the full width.

Regions above ``max_fraction`` of the image are dropped, one overlapping a stronger one by IoU
above ``overlap`` is dropped, and the strongest ``max_proposals`` are kept. ``large_polarity="off"``
and ``None`` for ``edge_ratio``, ``smooth_threshold`` or ``band_threshold`` turn a channel off. The defaults were
tuned with ``benchmarks/tune_classical.py`` on the train part of the seeded magnetic-tile split;
``benchmarks/proposers.py`` reports them on the held-out part.
"""

from __future__ import annotations

import cv2
import numpy as np

from defectkit.images import gray
from defectkit.matching import mask_iou
from defectkit.propose.base import Proposer, Prompts


def robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 * median absolute deviation): a z-score that outliers do not
    inflate. Median and deviation come from at most about 20,000 evenly strided values."""
    sample = values.ravel()[:: max(1, values.size // 20000)]
    median = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - median)))
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


def downscale(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` as float32, area-averaged so that its shorter side is ``side`` (never enlarged)."""
    height, width = image.shape
    scale = min(1.0, side / min(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)


def ring_contrast(g: np.ndarray, mask: np.ndarray) -> float:
    """How much darker a region is than a ring around it (as wide as half the square root of the
    region's area): (ring median - region median) / (ring median + 1); negative when brighter."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    radius = max(2, int(0.5 * np.sqrt(np.count_nonzero(mask[y : y + h, x : x + w]))))
    height, width = mask.shape
    y0, y1 = max(0, y - radius), min(height, y + h + radius)
    x0, x1 = max(0, x - radius), min(width, x + w + radius)
    inside = mask[y0:y1, x0:x1]
    ring = cv2.dilate(inside.astype(np.uint8), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)).astype(bool) & ~inside
    if ring.sum() < 5:
        return 0.0
    crop = g[y0:y1, x0:x1]
    around = float(np.median(crop[ring]))
    return (around - float(np.median(crop[inside]))) / (around + 1.0)


def border_deviation(small: np.ndarray, ratio: float, reach: float, window: float, depth: float) -> np.ndarray:
    """Where the part's border lies deeper than its smoothed outline (see the module's ``edge``).

    Each side of the image is turned to the left in turn; per row, the outline is the first
    column (within ``reach`` of the width) brighter than ``ratio`` times the row's median, its
    smoothed version is its morphological opening over ``window`` of the rows (which removes
    inward bumps shorter than that), and rows where the two differ by ``depth`` of the shorter
    image side or more are filled between them."""
    chips = np.zeros(small.shape, dtype=bool)
    min_depth = max(1.0, depth * min(small.shape))
    for turn in range(4):
        view = np.rot90(small, turn)
        part = view > ratio * np.median(view, axis=1, keepdims=True)
        limit = max(2, int(reach * view.shape[1]))
        near = part[:, :limit]
        outline = np.where(near.any(axis=1), near.argmax(axis=1), limit).astype(np.float32).reshape(-1, 1)
        outline = cv2.medianBlur(outline, 3)
        kernel = np.ones((_odd(window * len(outline)), 1), np.uint8)
        smoothed = cv2.dilate(cv2.erode(outline, kernel), kernel)
        outline, smoothed = outline.ravel(), smoothed.ravel()
        columns = np.arange(view.shape[1])[None, :]
        missing = (outline - smoothed >= min_depth)[:, None] & (columns >= smoothed[:, None]) & (columns < outline[:, None])
        chips |= np.rot90(missing, -turn)
    return chips


CHANNELS = ("dark", "large", "edge", "smooth", "band")


class ClassicalProposer(Proposer):
    name = "classical"

    def __init__(
        self,
        dark_window: int = 21,
        dark_blur: float = 1.0,
        dark_threshold: float = 6.0,
        dark_grow: float = 3.0,
        dark_min_area: int = 45,
        dark_min_contrast: float = 0.2,
        large_side: int = 96,
        large_blur: float = 1.5,
        large_threshold: float = 6.0,
        large_grow: float = 2.5,
        large_min_fraction: float = 0.005,
        large_min_contrast: float = 0.4,
        large_polarity: str = "dark",
        edge_side: int = 96,
        edge_ratio: float | None = 0.6,
        edge_reach: float = 0.4,
        edge_window: float = 0.4,
        edge_depth: float = 0.03,
        edge_min_fraction: float = 0.001,
        edge_min_contrast: float = 0.25,
        smooth_side: int = 64,
        smooth_blur: float = 1.5,
        smooth_reference: float = 70.0,
        smooth_threshold: float | None = 3.5,
        smooth_grow: float = 1.0,
        smooth_min_fraction: float = 0.03,
        band_threshold: float | None = 3.0,
        band_side: int = 96,
        band_min_fraction: float = 0.1,
        band_rows: int = 2,
        band_sides: str = "smaller",
        max_fraction: float = 0.5,
        overlap: float = 0.3,
        max_proposals: int = 8,
    ):
        super().__init__()
        if large_polarity not in ("dark", "bright", "both", "off"):
            raise ValueError(f"large_polarity must be dark, bright, both or off, got {large_polarity!r}")
        if band_sides not in ("smaller", "both"):
            raise ValueError(f"band_sides must be smaller or both, got {band_sides!r}")
        self.dark_window = dark_window
        self.dark_blur = dark_blur
        self.dark_threshold = dark_threshold
        self.dark_grow = dark_grow
        self.dark_min_area = dark_min_area
        self.dark_min_contrast = dark_min_contrast
        self.large_side = large_side
        self.large_blur = large_blur
        self.large_threshold = large_threshold
        self.large_grow = large_grow
        self.large_min_fraction = large_min_fraction
        self.large_min_contrast = large_min_contrast
        self.large_polarity = large_polarity
        self.edge_side = edge_side
        self.edge_ratio = edge_ratio
        self.edge_reach = edge_reach
        self.edge_window = edge_window
        self.edge_depth = edge_depth
        self.edge_min_fraction = edge_min_fraction
        self.edge_min_contrast = edge_min_contrast
        self.smooth_side = smooth_side
        self.smooth_blur = smooth_blur
        self.smooth_reference = smooth_reference
        self.smooth_threshold = smooth_threshold
        self.smooth_grow = smooth_grow
        self.smooth_min_fraction = smooth_min_fraction
        self.band_threshold = band_threshold
        self.band_side = band_side
        self.band_min_fraction = band_min_fraction
        self.band_rows = band_rows
        self.band_sides = band_sides
        self.max_fraction = max_fraction
        self.overlap = overlap
        self.max_proposals = max_proposals
        self._proposals: list[np.ndarray] = []
        self._small: tuple[np.ndarray | None, dict[int, np.ndarray]] = (None, {})  # downscaled copies of one image

    def config(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("image", "image_path")}

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        self._proposals = self.select(self.candidates(gray(image)), image.shape[0] * image.shape[1])

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        return [mask.copy() for mask in self._proposals]

    def candidates(self, g: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """(score, full-size mask) of every region any channel finds in the gray image ``g``."""
        streaks = np.abs(cv2.Sobel(g.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3))  # |d/dx|
        self._small = (g, {})
        return [found for name in CHANNELS for found in self.channel(name, g, streaks)]

    def _downscale(self, g: np.ndarray, side: int) -> np.ndarray:
        """:func:`downscale`, computed once per image and side (channels share it; none changes it)."""
        if self._small[0] is not g:
            self._small = (g, {})
        if side not in self._small[1]:
            self._small[1][side] = downscale(g, side)
        return self._small[1][side]

    def channel(self, name: str, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """(score, full-size mask) of the regions one channel finds; ``streaks`` is |d/dx| of ``g``."""
        return getattr(self, "_" + name)(g, streaks)

    def select(self, scored: list[tuple[float, np.ndarray]], size: int) -> list[np.ndarray]:
        """The strongest ``max_proposals`` regions of at most ``max_fraction`` of the image, none
        overlapping a stronger one by IoU above ``overlap``."""
        kept: list[np.ndarray] = []
        for _, mask in sorted(scored, key=lambda item: -item[0]):
            if len(kept) == self.max_proposals:
                break
            if np.count_nonzero(mask) > self.max_fraction * size or any(mask_iou(mask, other) > self.overlap for other in kept):
                continue
            kept.append(mask)
        return kept

    def _dark(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        background = cv2.medianBlur(g, _odd(self.dark_window)).astype(np.float32)
        smooth = cv2.GaussianBlur(g.astype(np.float32), (0, 0), self.dark_blur) if self.dark_blur > 0 else g.astype(np.float32)
        z = -robust_z(smooth - background)  # darker than the background = positive
        # the regions of hysteresis(strong, weak), labelled once
        regions = _components(z > self.dark_grow, z, self.dark_min_area, strong=z > self.dark_threshold)
        return [(score / self.dark_grow, region) for score, region in regions if ring_contrast(g, region) >= self.dark_min_contrast]

    def _large(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.large_polarity == "off":
            return []
        small = cv2.GaussianBlur(self._downscale(g, self.large_side), (0, 0), self.large_blur)
        log = np.log1p(small)
        columns = np.median(log, axis=0, keepdims=True)
        for _ in range(2):  # alternate: rows given columns, columns given rows
            rows = np.median(log - columns, axis=1, keepdims=True)
            columns = np.median(log - rows, axis=0, keepdims=True)
        z = robust_z(log - rows - columns)
        polarities = {"dark": (-1,), "bright": (1,), "both": (-1, 1)}[self.large_polarity]
        out = []
        for sign in polarities:
            mask = hysteresis(sign * z > self.large_threshold, sign * z > self.large_grow)
            out += _contrasted(small, mask, self.large_min_fraction, self.large_min_contrast, g.shape, sign)
        return out

    def _edge(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.edge_ratio is None:
            return []
        small = cv2.GaussianBlur(self._downscale(g, self.edge_side), (0, 0), 1.0)
        chips = border_deviation(small, self.edge_ratio, self.edge_reach, self.edge_window, self.edge_depth)
        regions = _contrasted(small, chips, self.edge_min_fraction, self.edge_min_contrast, g.shape)
        # at a corner (touching two sides of the image), a wider dark margin is the part's rounded
        # or shaded corner far more often than a chip
        return [(score, region) for score, region in regions if _sides_touched(region) < 2]

    def _smooth(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.smooth_threshold is None:
            return []
        small = self._downscale(g, self.smooth_side)
        energy = cv2.resize(streaks, small.shape[::-1], interpolation=cv2.INTER_AREA)
        texture = cv2.GaussianBlur(np.log1p(energy) - np.log1p(small), (0, 0), self.smooth_blur)
        spread = 1.4826 * float(np.median(np.abs(texture - np.median(texture))))
        z = (float(np.percentile(texture, self.smooth_reference)) - texture) / max(spread, 1e-3)  # streak-free = positive
        mask = hysteresis(z > self.smooth_threshold, z > self.smooth_grow)
        z_full = cv2.resize(z, g.shape[::-1], interpolation=cv2.INTER_LINEAR)
        regions = _components(_upscale(mask, g.shape), z_full, self.smooth_min_fraction * g.size)
        return [(score / self.smooth_grow, region) for score, region in regions]

    def _band(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.band_threshold is None:
            return []
        height, width = g.shape
        small = self._downscale(g, self.band_side)
        scale = small.shape[0] / height
        energy = cv2.resize(streaks, small.shape[::-1], interpolation=cv2.INTER_AREA)
        rows = np.stack([np.median(small - np.median(small, axis=0, keepdims=True), axis=1), np.median(np.log1p(energy), axis=1)], axis=1)
        n, w = len(rows), self.band_rows
        margin = max(w, int(self.band_min_fraction * n))
        if n < 2 * margin + 1:
            return []
        steps = np.diff(rows, axis=0)
        noise = 1.4826 * np.median(np.abs(steps - np.median(steps, axis=0)), axis=0) + 1e-6
        cumulative = np.vstack([np.zeros((1, 2)), np.cumsum(rows, axis=0)])
        splits = np.arange(margin, n - margin + 1)
        below = (cumulative[splits + w] - cumulative[splits]) / w
        above = (cumulative[splits] - cumulative[splits - w]) / w
        statistic = np.linalg.norm((below - above) / noise, axis=1)
        best = int(statistic.argmax())
        if statistic[best] < self.band_threshold:
            return []
        split, row = int(splits[best]), int(round(splits[best] / scale))
        upper = np.zeros((height, width), dtype=bool)
        upper[:row] = True
        if self.band_sides == "both":
            parts = [upper, ~upper]
        else:
            parts = [upper if split < n - split else ~upper]
        return [(float(statistic[best]) / self.band_threshold, part) for part in parts]


def _contrasted(small, mask, min_fraction, min_contrast, shape, sign=-1) -> list[tuple[float, np.ndarray]]:
    """(contrast / ``min_contrast``, full-size mask) of each region of the low-resolution ``mask``
    (at least ``min_fraction`` of it) that is at least ``min_contrast`` darker (``sign`` -1) or
    brighter (+1) than a ring around it in the low-resolution image ``small``."""
    out = []
    for _, region in _components(mask, None, min_fraction * mask.size):
        contrast = -sign * ring_contrast(small, region)
        if contrast >= min_contrast:
            out.append((contrast / min_contrast, _upscale(region, shape)))
    return out


def _sides_touched(mask: np.ndarray) -> int:
    return int(mask[0].any()) + int(mask[-1].any()) + int(mask[:, 0].any()) + int(mask[:, -1].any())


def _upscale(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def _components(mask: np.ndarray, z: np.ndarray | None, min_area: float, strong: np.ndarray | None = None) -> list[tuple[float, np.ndarray]]:
    """(mean z, or 0 without z; full-size mask) of each 8-connected region of at least ``min_area``
    pixels; with ``strong``, only of the regions holding a pixel of it (``hysteresis(strong, mask)``)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    held = np.ones(count, dtype=bool)
    if strong is not None:
        held[:] = False
        held[np.unique(labels[strong & mask])] = True
    out = []
    for index in range(1, count):
        x, y, w, h, area = stats[index]
        if area < min_area or not held[index]:
            continue
        inside = labels[y : y + h, x : x + w] == index
        region = np.zeros(mask.shape, dtype=bool)
        region[y : y + h, x : x + w] = inside
        out.append((0.0 if z is None else float(z[y : y + h, x : x + w][inside].mean()), region))
    return out
