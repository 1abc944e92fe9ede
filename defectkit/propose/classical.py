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

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from defectkit.errors import DefectkitError
from defectkit.images import gray
from defectkit.matching import mask_iou
from defectkit.propose.base import Proposer, Prompts
from defectkit.registry import same_kind


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


@dataclass(frozen=True)
class DarkChannel:
    window: int = 21
    blur: float = 1.0
    threshold: float = 6.0
    grow: float = 3.0
    min_area: int = 45
    min_contrast: float = 0.2


@dataclass(frozen=True)
class LargeChannel:
    side: int = 96
    blur: float = 1.5
    threshold: float = 6.0
    grow: float = 2.5
    min_fraction: float = 0.005
    min_contrast: float = 0.4
    polarity: str = "dark"  # dark | bright | both | off

    def __post_init__(self):
        if self.polarity not in ("dark", "bright", "both", "off"):
            raise ValueError(f"large_polarity must be dark, bright, both or off, got {self.polarity!r}")


@dataclass(frozen=True)
class EdgeChannel:
    side: int = 96
    ratio: float | None = 0.6  # None: channel off
    reach: float = 0.4
    window: float = 0.4
    depth: float = 0.03
    min_fraction: float = 0.001
    min_contrast: float = 0.25


@dataclass(frozen=True)
class SmoothChannel:
    side: int = 64
    blur: float = 1.5
    reference: float = 70.0
    threshold: float | None = 3.5  # None: channel off
    grow: float = 1.0
    min_fraction: float = 0.03


@dataclass(frozen=True)
class BandChannel:
    threshold: float | None = 3.0  # None: channel off
    side: int = 96
    min_fraction: float = 0.1
    rows: int = 2
    sides: str = "smaller"  # smaller | both

    def __post_init__(self):
        if self.sides not in ("smaller", "both"):
            raise ValueError(f"band_sides must be smaller or both, got {self.sides!r}")


@dataclass(frozen=True)
class Selection:
    max_fraction: float = 0.5
    overlap: float = 0.3
    max_proposals: int = 8


CHANNELS = {"dark": DarkChannel, "large": LargeChannel, "edge": EdgeChannel, "smooth": SmoothChannel, "band": BandChannel}


def flat_settings(channels: dict[str, object], selection: Selection) -> dict:
    """Every setting by its flat name (``dark_threshold``, ..., ``max_proposals``), channel by channel."""
    flat = {f"{name}_{key}": value for name, channel in channels.items() for key, value in asdict(channel).items()}
    return {**flat, **asdict(selection)}


def apply_settings(channels: dict[str, object], selection: Selection, overrides: dict) -> tuple[dict[str, object], Selection]:
    """``overrides`` by flat name (as ``-O dark_threshold=5`` gives them) applied to the groups."""
    changes: dict[str, dict] = {}
    for key, value in overrides.items():
        group, _, field = key.partition("_")
        if key in Selection.__dataclass_fields__:
            group, field = "selection", key
        elif group not in channels or field not in CHANNELS[group].__dataclass_fields__:
            raise DefectkitError(f"proposer 'classical' has no setting {key!r}; known: {', '.join(flat_settings(channels, selection))}")
        default = getattr(selection if group == "selection" else channels[group], field)
        if not same_kind(default, value):
            raise DefectkitError(f"proposer 'classical': option {key} must be {type(default).__name__} like its default {default!r}, got {value!r}")
        changes.setdefault(group, {})[field] = value
    channels = {name: replace(channel, **changes.get(name, {})) for name, channel in channels.items()}
    return channels, replace(selection, **changes.get("selection", {}))


class ClassicalProposer(Proposer):
    name = "classical"

    def __init__(self, dark: DarkChannel = DarkChannel(), large: LargeChannel = LargeChannel(), edge: EdgeChannel = EdgeChannel(),
                 smooth: SmoothChannel = SmoothChannel(), band: BandChannel = BandChannel(), selection: Selection = Selection(),
                 **settings):
        """One settings object per channel and one for the selection; ``settings`` override single
        ones by their flat name (``dark_threshold=5.0``, ``max_proposals=4``), as ``-O`` gives them."""
        super().__init__()
        channels, self.selection = apply_settings(
            {"dark": dark, "large": large, "edge": edge, "smooth": smooth, "band": band}, selection, settings)
        self.dark, self.large, self.edge, self.smooth, self.band = (channels[name] for name in CHANNELS)
        self._proposals: list[np.ndarray] = []
        self._small: tuple[np.ndarray | None, dict[int, np.ndarray]] = (None, {})  # downscaled copies of one image

    def config(self) -> dict:
        return flat_settings({name: getattr(self, name) for name in CHANNELS}, self.selection)

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
            if len(kept) == self.selection.max_proposals:
                break
            if np.count_nonzero(mask) > self.selection.max_fraction * size or any(mask_iou(mask, other) > self.selection.overlap for other in kept):
                continue
            kept.append(mask)
        return kept

    def _dark(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        background = cv2.medianBlur(g, _odd(self.dark.window)).astype(np.float32)
        smooth = cv2.GaussianBlur(g.astype(np.float32), (0, 0), self.dark.blur) if self.dark.blur > 0 else g.astype(np.float32)
        z = -robust_z(smooth - background)  # darker than the background = positive
        # the regions of hysteresis(strong, weak), labelled once
        regions = _components(z > self.dark.grow, z, self.dark.min_area, strong=z > self.dark.threshold)
        return [(score / self.dark.grow, region) for score, region in regions if ring_contrast(g, region) >= self.dark.min_contrast]

    def _large(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.large.polarity == "off":
            return []
        small = cv2.GaussianBlur(self._downscale(g, self.large.side), (0, 0), self.large.blur)
        log = np.log1p(small)
        columns = np.median(log, axis=0, keepdims=True)
        for _ in range(2):  # alternate: rows given columns, columns given rows
            rows = np.median(log - columns, axis=1, keepdims=True)
            columns = np.median(log - rows, axis=0, keepdims=True)
        z = robust_z(log - rows - columns)
        polarities = {"dark": (-1,), "bright": (1,), "both": (-1, 1)}[self.large.polarity]
        out = []
        for sign in polarities:
            mask = hysteresis(sign * z > self.large.threshold, sign * z > self.large.grow)
            out += _contrasted(small, mask, self.large.min_fraction, self.large.min_contrast, g.shape, sign)
        return out

    def _edge(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.edge.ratio is None:
            return []
        small = cv2.GaussianBlur(self._downscale(g, self.edge.side), (0, 0), 1.0)
        chips = border_deviation(small, self.edge.ratio, self.edge.reach, self.edge.window, self.edge.depth)
        regions = _contrasted(small, chips, self.edge.min_fraction, self.edge.min_contrast, g.shape)
        # at a corner (touching two sides of the image), a wider dark margin is the part's rounded
        # or shaded corner far more often than a chip
        return [(score, region) for score, region in regions if _sides_touched(region) < 2]

    def _smooth(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.smooth.threshold is None:
            return []
        small = self._downscale(g, self.smooth.side)
        energy = cv2.resize(streaks, small.shape[::-1], interpolation=cv2.INTER_AREA)
        texture = cv2.GaussianBlur(np.log1p(energy) - np.log1p(small), (0, 0), self.smooth.blur)
        spread = 1.4826 * float(np.median(np.abs(texture - np.median(texture))))
        z = (float(np.percentile(texture, self.smooth.reference)) - texture) / max(spread, 1e-3)  # streak-free = positive
        mask = hysteresis(z > self.smooth.threshold, z > self.smooth.grow)
        z_full = cv2.resize(z, g.shape[::-1], interpolation=cv2.INTER_LINEAR)
        regions = _components(_upscale(mask, g.shape), z_full, self.smooth.min_fraction * g.size)
        return [(score / self.smooth.grow, region) for score, region in regions]

    def _band(self, g: np.ndarray, streaks: np.ndarray) -> list[tuple[float, np.ndarray]]:
        if self.band.threshold is None:
            return []
        height, width = g.shape
        small = self._downscale(g, self.band.side)
        scale = small.shape[0] / height
        energy = cv2.resize(streaks, small.shape[::-1], interpolation=cv2.INTER_AREA)
        rows = np.stack([np.median(small - np.median(small, axis=0, keepdims=True), axis=1), np.median(np.log1p(energy), axis=1)], axis=1)
        n, w = len(rows), self.band.rows
        margin = max(w, int(self.band.min_fraction * n))
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
        if statistic[best] < self.band.threshold:
            return []
        split, row = int(splits[best]), int(round(splits[best] / scale))
        upper = np.zeros((height, width), dtype=bool)
        upper[:row] = True
        if self.band.sides == "both":
            parts = [upper, ~upper]
        else:
            parts = [upper if split < n - split else ~upper]
        return [(float(statistic[best]) / self.band.threshold, part) for part in parts]


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
