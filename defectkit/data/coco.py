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
        image_path = _locate(json_path.parent, str(info.get("file_name", "")))
        anns = by_image.get(info.get("id"), [])
        yield Sample(image_path, _loader(image_path, json_path, info, anns, categories), defect_free=not anns)


def _locate(root: Path, file_name: str) -> Path:
    for candidate in (root / file_name, root / "images" / file_name):
        if candidate.is_file():
            return candidate
    return root / file_name


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


def _decode(ann: dict, height: int, width: int, json_path: Path) -> np.ndarray:
    segmentation = ann.get("segmentation")
    try:
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
        return mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise InputError(json_path, f"annotation {ann.get('id')}: cannot decode its segmentation ({exc})") from exc
