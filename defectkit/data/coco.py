"""COCO instances json (polygons or RLE), read with pycocotools. SRC is the json file, or a folder
holding one; ``file_name`` is looked up relative to the json's folder, then its ``images/`` folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
from pycocotools import mask as mask_utils

from defectkit.data import Annotation, Sample
from defectkit.errors import DefectkitError, InputError
from defectkit.images import read_image


def _find_json(src: Path) -> Path:
    if src.is_file():
        return src
    candidates = sorted(src.glob("*.json")) or sorted(src.rglob("*.json"))
    if len(candidates) != 1:
        raise DefectkitError(
            f"{src}: expected one COCO json file, found {len(candidates)}; pass the json file itself"
        )
    return candidates[0]


def read_coco(src: Path) -> Iterator[Sample]:
    json_path = _find_json(src)
    try:
        data = json.loads(json_path.read_text())
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = data["images"]
        annotations = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DefectkitError(f"{json_path}: not a COCO instances file ({exc})") from exc
    by_image: dict[int, list[dict]] = {}
    for ann in annotations:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    for info in sorted(images, key=lambda i: str(i.get("file_name"))):
        file_name = str(info.get("file_name", ""))
        anns = by_image.get(info.get("id"), [])
        if Path(file_name).is_absolute() or ".." in Path(file_name).parts:
            yield Sample(json_path.parent / file_name, _refused(json_path, file_name), defect_free=not anns)
            continue
        image_path = _locate(json_path.parent, file_name)
        yield Sample(image_path, _loader(image_path, json_path, info, anns, categories), defect_free=not anns)


def _locate(root: Path, file_name: str) -> Path:
    for candidate in (root / file_name, root / "images" / file_name):
        if candidate.is_file():
            return candidate
    return root / file_name


def _refused(json_path: Path, file_name: str):
    def load():
        raise InputError(json_path, f"file_name {file_name!r} points outside the data set (absolute or '..'); "
                                    f"image paths must be relative to {json_path.parent} (a classify or segment run's "
                                    "coco.json: `defectkit export-review RUN --to coco --root IMAGES` writes them so)")

    return load


def _loader(image_path: Path, json_path: Path, info: dict, anns: list[dict], categories: dict):
    def load():
        image = read_image(image_path)
        height, width = image.shape[:2]
        if (info.get("width"), info.get("height")) not in ((width, height), (None, None)):
            raise InputError(
                image_path,
                f"{json_path.name} says {info.get('width')}x{info.get('height')}, the file is {width}x{height}",
            )
        out = []
        for ann in anns:
            label = categories.get(ann.get("category_id"))
            if label is None:
                raise InputError(json_path, f"annotation {ann.get('id')} has unknown category_id {ann.get('category_id')}")
            out.append(Annotation(label, mask=_decode(ann, height, width, json_path), is_box=_is_box_only(ann)))
        return image, out

    return load


def _is_box_only(ann: dict) -> bool:
    segmentation = ann.get("segmentation")
    return not segmentation and isinstance(ann.get("bbox"), (list, tuple)) and len(ann["bbox"]) == 4


def _check(ann: dict, height: int, width: int) -> None:
    """Raise ValueError for what pycocotools would choke on (a coordinate of 1e9 crashes it) or
    silently get wrong (an RLE of another size)."""
    limit = 2 * (height + width)
    segmentation = ann.get("segmentation")

    def coordinates(values, what):
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{what} must be a list of numbers")
        if not all(np.isfinite(v) and -limit <= v <= limit for v in values):
            raise ValueError(f"{what} has a coordinate far outside the {width}x{height} image")

    if isinstance(segmentation, list) and segmentation:
        for polygon in segmentation:
            coordinates(polygon, "a polygon")
            if len(polygon) < 6 or len(polygon) % 2:
                raise ValueError(f"a polygon needs an even number of coordinates, at least 6; it has {len(polygon)}")
    elif isinstance(segmentation, dict):
        if [int(v) for v in segmentation.get("size") or []] != [height, width]:
            raise ValueError(f"its RLE size {segmentation.get('size')} is not the image's [{height}, {width}]")
        counts = segmentation.get("counts")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise ValueError("its RLE counts must be non-negative integers that sum to the image's pixel count")
        elif not isinstance(counts, str):
            raise ValueError("its RLE has no counts")
    elif "bbox" in ann:
        coordinates(ann["bbox"], "its bbox")
        if len(ann["bbox"]) != 4 or ann["bbox"][2] < 0 or ann["bbox"][3] < 0:
            raise ValueError("its bbox must be [x, y, width, height]")


def _decode(ann: dict, height: int, width: int, json_path: Path) -> np.ndarray:
    segmentation = ann.get("segmentation")
    try:
        _check(ann, height, width)
        if isinstance(segmentation, list) and segmentation:
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict):
            rle = segmentation
            if isinstance(rle.get("counts"), list):
                rle = mask_utils.frPyObjects(rle, height, width)
        elif "bbox" in ann:
            x, y, w, h = ann["bbox"]
            rle = mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], height, width)[0]
        else:
            raise ValueError("no segmentation and no bbox")
        mask = mask_utils.decode(rle).astype(bool)
        if mask.shape != (height, width):
            raise ValueError(f"it decodes to {mask.shape[1]}x{mask.shape[0]}, the image is {width}x{height}")
        return mask
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise InputError(json_path, f"annotation {ann.get('id')}: cannot decode its segmentation ({exc})") from exc
