"""A Label Studio JSON export (reviewed tasks) as a labelled data set.

SRC is the exported JSON file (a list of tasks), or a folder holding one. Each task's image is
``data.image`` (a ``/data/local-files/?d=`` or other URL prefix up to the last ``=`` is dropped),
looked up relative to the JSON's folder, then to ``data.defectkit_root`` where ``export-review``
wrote it; a path that is absolute or climbs out with ``..`` is refused, as in the COCO reader.

The task's latest annotation that was not cancelled is the truth: ``polygonlabels`` are masks,
``rectanglelabels`` boxes; an annotation with no result marks a defect-free image; a task nobody
annotated is left out (its predictions are not labels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from defectkit.data import Annotation, Sample
from defectkit.errors import DefectkitError, InputError
from defectkit.images import read_image


def _find_json(src: Path) -> Path:
    if src.is_file():
        return src
    found = sorted(src.glob("*.json"))
    if len(found) != 1:
        raise DefectkitError(f"{src}: expected one Label Studio export (.json), found {len(found)}; pass the file itself")
    return found[0]


def read_labelstudio(src: Path) -> Iterator[Sample]:
    json_path = _find_json(src)
    try:
        tasks = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise DefectkitError(f"{json_path}: not a Label Studio export ({exc})") from exc
    if not isinstance(tasks, list):
        raise DefectkitError(f"{json_path}: not a Label Studio export (expected a list of tasks)")
    for task in tasks:
        if not isinstance(task, dict):
            continue
        data = task.get("data") or {}
        annotations = [a for a in (task.get("annotations") or []) if not a.get("was_cancelled")]
        if not annotations:
            continue
        name = str(data.get("image", "")).rsplit("=", 1)[-1]
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            yield Sample(json_path.parent / name, _refused(json_path, name), defect_free=False)
            continue
        image_path = _locate(json_path.parent, data.get("defectkit_root"), name)
        results = annotations[-1].get("result") or []
        yield Sample(image_path, _loader(image_path, json_path, results), defect_free=not results)


def _locate(folder: Path, root: str | None, name: str) -> Path:
    for base in (folder, Path(root) if root else None):
        if base is not None and (base / name).is_file():
            return base / name
    return folder / name


def _refused(json_path: Path, name: str):
    def load():
        raise InputError(json_path, f"image {name!r} is absolute or climbs out with '..'; give paths relative to the export")

    return load


def _loader(image_path: Path, json_path: Path, results: list[dict]):
    def load():
        image = read_image(image_path)
        height, width = image.shape[:2]
        return image, [_annotation(r, width, height, json_path) for r in results]

    return load


def _annotation(result: dict, width: int, height: int, json_path: Path) -> Annotation:
    kind, value = result.get("type"), result.get("value") or {}
    try:
        if kind == "polygonlabels":
            points = np.array([[x * width / 100, y * height / 100] for x, y in value["points"]], dtype=np.float64)
            # two points: a region a pixel wide, as classify writes a thin crack (its outline simplifies to a line)
            if len(points) < 2 or not np.isfinite(points).all():
                raise ValueError("a polygon needs at least 2 finite points")
            mask = np.zeros((height, width), np.uint8)
            cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
            return Annotation(str(value["polygonlabels"][0]), mask=mask.astype(bool))
        if kind == "rectanglelabels":
            x, y = value["x"] * width / 100, value["y"] * height / 100
            w, h = value["width"] * width / 100, value["height"] * height / 100
            return Annotation(str(value["rectanglelabels"][0]), polygon=[[x, y], [x + w, y], [x + w, y + h], [x, y + h]], is_box=True)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputError(json_path, f"result {result.get('id')!r}: cannot read its {kind} ({exc})") from exc
    raise InputError(json_path, f"result {result.get('id')!r}: type {kind!r} is not supported (use polygonlabels or rectanglelabels)")
