"""Random patches of whole images, at their own resolution, for pretraining without labels.

A line's archive of unlabelled images (defect-free ones included) is what an inspection user has
plenty of; ``pretrain`` learns from patches of it when given a folder of images instead of a crop
data set. Images named in ``exclude`` (a split's held-out images) are never sampled, so that a
backbone pretrained here does not see the images it is later scored on.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from defectkit.data import find_images, listed_paths
from defectkit.data.manifest import read_manifest
from defectkit.data.masks import pair_images
from defectkit.errors import DefectkitError, InputError
from defectkit.images import read_image


def image_files(folder: str | Path, exclude: Iterable[str | Path] = ()) -> list[Path]:
    """The images under ``folder`` (masks beside their images left out), less those in ``exclude``
    (compared as resolved paths)."""
    left_out = {Path(p).resolve() for p in exclude}
    return [p for p in pair_images(find_images(Path(folder))) if p.resolve() not in left_out]


def held_out_images(sources: Iterable[str | Path]) -> set[Path]:
    """Image paths to keep out of pretraining, from crop data sets (the ``image`` of every record,
    e.g. the test part ``defectkit split`` writes) and text files of one path per line."""
    images: set[Path] = set()
    for source in map(Path, sources):
        if source.is_dir() or source.name == "manifest.jsonl":
            images |= {Path(r["image"]).resolve() for r in read_manifest(source, check_files=False) if r.get("image")}
        elif source.is_file():
            images |= {p.resolve() for p in listed_paths(source)}
        else:
            raise DefectkitError(f"--exclude {source}: no such crop data set or list of images")
    return images


def sample_patches(images: list[Path], size: int, per_image: int, seed: int = 0,
                   max_size: int = 0) -> tuple[list[np.ndarray], list[Path]]:
    """``per_image`` square patches of ``size`` pixels from each image, at uniformly random places
    (an image smaller than ``size`` is scaled up to it). With ``max_size``, each patch is a window of
    a side drawn log-uniformly between ``size`` and ``max_size`` (at most the image's shorter side),
    shrunk to ``size``: the scales of the crops that regions of every size give. Each image is
    decoded once; an unreadable one is skipped with a warning. Returns the patches and the image
    each came from."""
    if size < 16 or per_image < 1 or (max_size and max_size < size):
        raise DefectkitError(f"patches need a size of at least 16 px, at least 1 per image and a largest size of at least "
                             f"the size; got {size}, {per_image} and {max_size}")
    rng = np.random.default_rng(seed)
    patches, sources = [], []
    for path in images:
        try:
            image = read_image(path)
        except InputError as exc:
            warnings.warn(f"pretrain: skipping {exc}", stacklevel=2)
            continue
        height, width = image.shape[:2]
        if min(height, width) < size:
            scale = size / min(height, width)
            image = cv2.resize(image, (max(size, round(width * scale)), max(size, round(height * scale))), interpolation=cv2.INTER_LINEAR)
            height, width = image.shape[:2]
        largest = min(max_size or size, height, width)
        for side in np.exp(rng.uniform(np.log(size), np.log(largest), per_image)).astype(int).clip(size, largest):
            y, x = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            patch = image[y : y + side, x : x + side]
            patches.append(np.ascontiguousarray(patch if side == size else cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)))
            sources.append(path)
    return patches, sources
