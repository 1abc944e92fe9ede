"""Labelled crop data sets for training and evaluation: manifest records, subtypes, source images."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectkit.data.manifest import read_manifest
from defectkit.data.split import source_of
from defectkit.errors import DefectkitError, TaxonomyError
from defectkit.taxonomy import Taxonomy


@dataclass
class LabelledCrops:
    path: Path
    records: list[dict]
    subtypes: np.ndarray  # one subtype per crop, resolved through the taxonomy
    groups: np.ndarray  # the source image of each crop: crops of one image never straddle folds

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> dict:
        return {
            "dataset": str(self.path),
            "crops": len(self.records),
            "images": int(len(np.unique(self.groups))),
            "per_subtype": dict(sorted(Counter(self.subtypes.tolist()).items())),
        }


def load_labelled(dataset: str | Path, taxonomy: Taxonomy) -> LabelledCrops:
    """Read a crop data set and map every crop's label onto ``taxonomy``; clear errors for bad input."""
    path = Path(dataset)
    records = read_manifest(path)
    if not records:
        raise DefectkitError(f"{path}: the crop data set is empty (its manifest lists no crops)")
    subtypes, unknown = [], Counter()
    for record in records:
        label = record.get("subtype") or record.get("label")
        try:
            subtypes.append(taxonomy.resolve(str(label))[1])
        except TaxonomyError:
            unknown[str(label)] += 1
            subtypes.append("")
    if unknown:
        listed = ", ".join(f"{label!r} ({n} crops)" for label, n in unknown.most_common())
        raise DefectkitError(
            f"{path}: label(s) missing from taxonomy {taxonomy.source}: {listed}; add them to the taxonomy "
            "as subtypes or aliases, or extract the data set with this taxonomy"
        )
    groups = [source_of(r) for r in records]
    return LabelledCrops(path, records, np.asarray(subtypes), np.asarray(groups))


def check_trainable(crops: LabelledCrops) -> None:
    """At least two subtypes, and at least two crops of each."""
    counts = Counter(crops.subtypes.tolist())
    if len(counts) < 2:
        raise DefectkitError(f"{crops.path}: training needs at least two subtypes, found only {sorted(counts)}")
    rare = {s: n for s, n in counts.items() if n < 2}
    if rare:
        raise DefectkitError(f"{crops.path}: subtype(s) with a single crop cannot be learned: {rare}; add crops or remove them")
