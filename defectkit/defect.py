"""The Defect record that flows through the whole pipeline, and its one JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

# Fields that hold arrays live only in memory; everything else round-trips through JSON.
_TRANSIENT = {"region", "crop", "crop_mask", "embedding"}


@dataclass
class Defect:
    """One connected region on one image, measured, and later embedded and classified.

    Coordinates are pixels of the source image, x to the right, y down. ``bbox`` is
    ``[x, y, width, height]`` (COCO order); ``polygon`` is the outer ring ``[[x, y], ...]``
    simplified to ``polygon_tolerance`` pixels, ``holes`` the inner rings; ``area`` counts the
    region's pixels; ``edges`` is the number of vertices of the outer ring.
    """

    image: str
    image_size: tuple[int, int]  # (width, height)
    polygon: list[list[int]]
    bbox: list[int]
    area: int
    edges: int
    holes: list[list[list[int]]] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    id: int = 0
    label: str | None = None  # raw label from the annotation, if any
    category: str | None = None
    subtype: str | None = None
    confidence: float | None = None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    crop_path: str | None = None
    mask_path: str | None = None
    # In memory only:
    region: Any = field(default=None, repr=False, compare=False)  # geometry.Region
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)
    crop_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            if f.name in _TRANSIENT:
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Defect":
        known = {f.name for f in fields(cls)} - _TRANSIENT
        kwargs = {k: v for k, v in data.items() if k in known}
        if "image_size" in kwargs:
            kwargs["image_size"] = tuple(kwargs["image_size"])
        return cls(**kwargs)


# --- one image's defects as a JSON record (what classify and segment write per image) -----------
def image_record(image: str | Path, size: tuple[int, int], defects: list[Defect], **context) -> dict:
    """One image's result: ``image``, ``size`` [width, height], then ``context`` (proposer, model,
    ...), then ``defects`` (each Defect's JSON form, without the image fields repeated)."""
    return {
        "image": str(image),
        "size": [int(size[0]), int(size[1])],
        **context,
        "defects": [{k: v for k, v in d.to_dict().items() if k not in ("image", "image_size")} for d in defects],
    }


def defects_from_record(record: dict) -> list[Defect]:
    """The Defects of an ``image_record`` (as read back from its JSON file)."""
    size = tuple(record["size"])
    return [Defect.from_dict({**d, "image": record["image"], "image_size": size}) for d in record["defects"]]
