"""Labelled images for SAM2: every connected ground-truth region is one object to segment.

- ``load_split`` reads a mask or COCO data set once, keeps the images that hold at least one region,
  and splits them by image (seeded, within each image label) into training and held-out images, so
  no image leaks between the two.
- ``training_subset`` takes nested shares of the training images (10 % is inside 25 %, ...).
- ``sample_prompt`` draws a training prompt from a region as SAM2 does; ``box_prompt`` and
  ``center_point`` are the fixed prompts of evaluation.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from defectkit.data import read_dataset
from defectkit.data.split import split_records
from defectkit.errors import DefectkitError, InputError, TaxonomyError
from defectkit.geometry import Region, connected_regions
from defectkit.taxonomy import BACKGROUND, Taxonomy

FORMATS = ("masks", "coco")


@dataclass
class Instance:
    """One ground-truth region and its subtype (the raw label when there is no taxonomy)."""

    subtype: str
    region: Region


@dataclass
class LabelledImage:
    path: Path
    key: str  # path relative to the data set, '/'-separated: how checkpoints record their images
    label: str  # image-level label (mask folder), or the first region's subtype: the split's strata
    shape: tuple[int, int]
    instances: list[Instance]
    load: Callable[[], np.ndarray] = field(repr=False)


@dataclass
class DataOptions:
    format: str = "masks"  # masks | coco
    taxonomy: Taxonomy | None = None
    mask_threshold: int = 127
    min_area: int = 10  # smaller regions are dropped
    val_fraction: float = 0.2  # share of the images held out, per image label
    seed: int = 0


@dataclass
class Split:
    train: list[LabelledImage]
    heldout: list[LabelledImage]
    skipped: list[tuple[str, str]]  # (file, reason) of unreadable images
    source: Path

    @property
    def regions(self) -> tuple[int, int]:
        return sum(len(i.instances) for i in self.train), sum(len(i.instances) for i in self.heldout)


def load_images(src: str | Path, options: DataOptions) -> tuple[list[LabelledImage], list[tuple[str, str]]]:
    """The images of a data set that hold at least one region, and the files that could not be read."""
    if options.format not in FORMATS:
        raise DefectkitError(f"SAM2 fine-tuning reads a mask data set or a COCO file: --format must be one of {', '.join(FORMATS)}, got {options.format!r}")
    src = Path(src)
    root = src if src.is_dir() else src.parent
    images, skipped = [], []
    for sample in read_dataset(src, options.format, options.mask_threshold):
        if options.taxonomy is not None and sample.label is not None and _is_background(options.taxonomy, sample.label):
            continue  # a defect-free folder: nothing to segment, no need to read it
        try:
            image, annotations = sample.load()
        except InputError as exc:
            skipped.append((exc.path, exc.reason))
            continue
        instances = []
        for annotation in annotations:
            subtype = annotation.label if options.taxonomy is None else options.taxonomy.resolve(annotation.label)[1]
            if subtype == BACKGROUND:
                continue
            if annotation.mask is not None:
                regions = connected_regions(annotation.mask, options.min_area)
            else:
                regions = [r for r in [Region.from_polygon(annotation.polygon, image.shape)] if r.area >= options.min_area]
            instances += [Instance(subtype, region) for region in regions]
        if instances:
            path = Path(sample.image_path)
            images.append(LabelledImage(
                path=path,
                key=_key(path, root),
                label=sample.label or instances[0].subtype,
                shape=tuple(image.shape[:2]),
                instances=instances,
                load=_reader(sample),
            ))
    if not images:
        raise DefectkitError(f"{src}: no labelled regions found (format {options.format}); SAM2 fine-tuning needs images with masks")
    return sorted(images, key=lambda i: i.key), skipped


def load_split(src: str | Path, options: DataOptions | None = None) -> Split:
    options = options or DataOptions()
    images, skipped = load_images(src, options)
    train, heldout = split_by_image(images, options.val_fraction, options.seed)
    return Split(train, heldout, skipped, Path(src))


def split_by_image(images: list[LabelledImage], val_fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ``val_fraction`` of the images of each label (at least one where a label has two or
    more), chosen by ``seed``; the same images and seed give the same split."""
    if not 0.0 <= val_fraction < 1.0:
        raise DefectkitError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return sorted(images, key=lambda i: i.key), []
    by_key = {image.key: image for image in images}
    train, heldout = split_records([{"image": key, "subtype": image.label} for key, image in sorted(by_key.items())], val_fraction, seed)
    return [by_key[r["image"]] for r in train], [by_key[r["image"]] for r in heldout]


def training_subset(images: list[LabelledImage], fraction: float, seed: int) -> list[LabelledImage]:
    """``fraction`` of the images of each label (at least one), nested: a smaller share is always
    inside a larger one for the same seed."""
    if not 0.0 < fraction <= 1.0:
        raise DefectkitError(f"a training fraction must be in (0, 1], got {fraction}")
    chosen = []
    for label, group in _by_label(images).items():
        order = _permutation(len(group), seed + 1, label)
        chosen += [group[i] for i in order[: max(1, math.ceil(len(group) * fraction - 1e-9))]]
    return sorted(chosen, key=lambda i: i.key)


def _by_label(images: list[LabelledImage]) -> dict[str, list[LabelledImage]]:
    groups: dict[str, list[LabelledImage]] = {}
    for image in sorted(images, key=lambda i: i.key):
        groups.setdefault(image.label, []).append(image)
    return dict(sorted(groups.items()))


def _permutation(n: int, seed: int, label: str) -> np.ndarray:
    return np.random.default_rng([seed, zlib.crc32(label.encode())]).permutation(n)


def _is_background(taxonomy: Taxonomy, label: str) -> bool:
    try:
        return taxonomy.resolve(label)[1] == BACKGROUND
    except TaxonomyError:
        return False


def _key(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _reader(sample) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return sample.load()[0]

    return load


# --- prompts ----------------------------------------------------------------------------------


@dataclass
class Prompt:
    """Coordinates (K, 2) in image pixels and their labels (K,): 2 and 3 a box's corners (first),
    1 positive and 0 negative points. ``multimask``: one point alone is ambiguous, so SAM answers it
    with three masks and is trained on the best of them."""

    coords: np.ndarray
    labels: np.ndarray

    @property
    def multimask(self) -> bool:
        return len(self.labels) == 1 and self.labels[0] == 1


def box_of(region: Region) -> np.ndarray:
    """The tight box (x0, y0, x1, y1) of a region, corners on its outermost pixels."""
    return np.array([region.x, region.y, region.x + region.w - 1, region.y + region.h - 1], dtype=np.float32)


def box_prompt(region: Region, shape: tuple[int, int], rng: np.random.Generator | None = None,
               jitter: float = 0.1, max_jitter: float = 20.0) -> Prompt:
    """The region's box; with ``rng``, each side moved by noise of std ``jitter`` x the box's side,
    at most ``max_jitter`` pixels (SAM's box augmentation)."""
    box = box_of(region)
    if rng is not None:
        side = np.array([region.w, region.h, region.w, region.h], dtype=np.float32)
        box = box + np.clip(rng.normal(0.0, 1.0, 4) * jitter * side, -max_jitter, max_jitter)
    height, width = shape
    x0, x1 = sorted(np.clip(box[[0, 2]], 0, width - 1))
    y0, y1 = sorted(np.clip(box[[1, 3]], 0, height - 1))
    return Prompt(np.array([[x0, y0], [x1, y1]], dtype=np.float32), np.array([2, 3]))


def center_point(region: Region) -> np.ndarray:
    """The region's pixel farthest from its border (x, y): the usual single-click evaluation prompt."""
    distance = cv2.distanceTransform(np.pad(region.mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return np.array([region.x + x, region.y + y], dtype=np.float32)


def sample_prompt(region: Region, shape: tuple[int, int], rng: np.random.Generator,
                  box_probability: float = 0.5, max_points: int = 3, negative_probability: float = 0.5) -> Prompt:
    """A training prompt: a jittered box with probability ``box_probability``, else 1 to
    ``max_points`` positive points drawn uniformly from the region and, with probability
    ``negative_probability``, one negative point near it (within one box side), outside it."""
    if rng.random() < box_probability:
        return box_prompt(region, shape, rng)
    ys, xs = np.nonzero(region.mask)
    count = int(rng.integers(1, max(1, max_points) + 1))
    picks = rng.choice(len(xs), size=min(count, len(xs)), replace=False)
    coords = [[region.x + xs[i], region.y + ys[i]] for i in picks]
    labels = [1] * len(coords)
    if rng.random() < negative_probability:
        negative = _negative_point(region, shape, rng)
        if negative is not None:
            coords.append(negative)
            labels.append(0)
    return Prompt(np.asarray(coords, dtype=np.float32), np.asarray(labels))


def _negative_point(region: Region, shape: tuple[int, int], rng: np.random.Generator):
    height, width = shape
    pad = max(region.w, region.h, 8)
    x0, y0 = max(0, region.x - pad), max(0, region.y - pad)
    x1, y1 = min(width, region.x + region.w + pad), min(height, region.y + region.h + pad)
    for _ in range(20):
        x, y = int(rng.integers(x0, x1)), int(rng.integers(y0, y1))
        rx, ry = x - region.x, y - region.y
        inside = 0 <= rx < region.w and 0 <= ry < region.h and region.mask[ry, rx]
        if not inside:
            return [x, y]
    return None
