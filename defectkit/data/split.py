"""Train/test split of a crop data set, grouped by source image and stratified by subtype."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from defectkit.data.manifest import SETTINGS, read_manifest, settings_path, write_manifest
from defectkit.errors import DefectkitError
from defectkit.taxonomy import BACKGROUND


def source_of(record: dict) -> str:
    """The source image a crop is grouped by: its content hash where extract recorded one, so that
    byte-identical copies of an image under two names (public data sets have them) stay on one
    side of a split; else its path."""
    return str(record.get("image_sha256") or record.get("image") or record["crop_path"])


def image_strata(records: list[dict]) -> dict[str, str]:
    """Each source image's stratum: its most frequent defect subtype, or background if it has none."""
    per_image: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        per_image[source_of(record)][record["subtype"]] += 1
    strata = {}
    for image, counts in per_image.items():
        defects = {s: n for s, n in counts.items() if s != BACKGROUND}
        strata[image] = max(sorted(defects), key=defects.get) if defects else BACKGROUND
    return strata


def split_records(records: list[dict], test_size: float = 0.3, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Every image's crops go wholly to train or to test; each stratum gives ``test_size`` of its
    images to test (at least one when it has two or more)."""
    if not 0 < test_size < 1:
        raise DefectkitError(f"test size must be between 0 and 1, got {test_size}")
    if not records:
        raise DefectkitError("cannot split an empty crop data set")
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for image, stratum in sorted(image_strata(records).items()):
        by_stratum[stratum].append(image)
    test_images: set[str] = set()
    for stratum in sorted(by_stratum):
        images = by_stratum[stratum]
        count = int(round(test_size * len(images)))
        if len(images) >= 2:
            count = min(max(count, 1), len(images) - 1)
        test_images.update(images[i] for i in rng.permutation(len(images))[:count])
    train = [r for r in records if source_of(r) not in test_images]
    test = [r for r in records if source_of(r) in test_images]
    return train, test


def split_dataset(dataset: str | Path, out: str | Path, test_size: float = 0.3, seed: int = 0) -> dict[str, list[dict]]:
    """Write ``out/train/manifest.jsonl`` and ``out/test/manifest.jsonl`` (crop paths made absolute)."""
    train, test = split_records(read_manifest(dataset), test_size, seed)
    out = Path(out)
    write_manifest(out / "train" / "manifest.jsonl", train)
    write_manifest(out / "test" / "manifest.jsonl", test)
    settings = settings_path(dataset)
    if settings.is_file():  # the parts were cut as their parent was
        for part in ("train", "test"):
            shutil.copyfile(settings, out / part / SETTINGS)
    return {"train": train, "test": test}
