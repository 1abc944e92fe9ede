"""Readers that turn labelled data sets (mask pairs, Pascal VOC, COCO, crop folders) into Samples.

A reader only finds files; it reads no pixels. Each Sample's ``load()`` reads its image and
annotations and raises ``InputError`` naming the file when something is wrong, so a batch job can
report that one file and go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from defectkit.errors import DefectkitError


@dataclass
class Annotation:
    """One labelled object: a full-size boolean mask (split into connected regions later), or a
    polygon such as a VOC box's four corners (kept as one region)."""

    label: str
    mask: np.ndarray | None = None
    polygon: list[list[float]] | None = None
    is_box: bool = False  # the label is a box drawn around the defect, not its outline


@dataclass
class Sample:
    """One image of a data set. ``label`` is an image-level label (the mask layout's folder), or
    None; ``defect_free`` is True when the annotation file says the image has no objects."""

    image_path: Path
    load: Callable[[], tuple[np.ndarray, list[Annotation]]] = field(repr=False)
    label: str | None = None
    defect_free: bool = False
    is_crop: bool = False  # the image already is a crop of one defect (the crops layout)
    annotated: bool = True  # False when the layout expects an annotation file and none was found


FORMATS = ("masks", "voc", "coco", "yolo", "labelstudio", "crops")


def read_dataset(src: str | Path, format: str, mask_threshold: int = 127) -> Iterator[Sample]:
    """Find the samples of a data set at ``src`` in one of ``FORMATS``."""
    src = Path(src)
    if not src.exists():
        raise DefectkitError(f"data set not found: {src}")
    if format == "masks":
        from defectkit.data.masks import read_mask_pairs

        return read_mask_pairs(src, mask_threshold)
    if format == "voc":
        from defectkit.data.voc import read_voc

        return read_voc(src)
    if format == "coco":
        from defectkit.data.coco import read_coco

        return read_coco(src)
    if format == "yolo":
        from defectkit.data.yolo import read_yolo

        return read_yolo(src)
    if format == "labelstudio":
        from defectkit.data.labelstudio import read_labelstudio

        return read_labelstudio(src)
    if format == "crops":
        from defectkit.data.crop_folder import read_crop_folder

        return read_crop_folder(src, mask_threshold)
    raise DefectkitError(f"unknown data set format {format!r}; choose one of {', '.join(FORMATS)}")


def find_images(root: Path) -> list[Path]:
    """Image files below ``root``, sorted, hidden folders skipped. A link that leads nowhere (dangling,
    or a loop) is listed too, so that reading it is reported rather than silently skipped."""
    from defectkit.images import IMAGE_SUFFIXES

    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and (p.is_file() or p.is_symlink())
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def listed_paths(list_file: Path) -> list[Path]:
    """The paths in a text file, one a line (relative ones to the file's folder; ``#`` starts a comment)."""
    out = []
    for line in list_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(Path(line) if Path(line).is_absolute() else list_file.parent / line)
    return out
