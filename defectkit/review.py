"""A classify run's predictions as pre-annotations for review, most useful first.

``export_review`` reads the per-image JSON records of a ``classify`` output folder and writes them for
a labelling tool, with image paths relative to the images' root:

- ``labelstudio``: Label Studio tasks (JSON), each defect a ``polygonlabels`` prediction with its
  score, points in percent of the image as Label Studio stores them;
- ``coco``: COCO instances with polygons (CVAT, and most other tools, import it);
- ``cvat``: CVAT for images 1.1 XML, each defect a ``<polygon>``.

Images are ranked so that the most useful to review come first: the least confident defect first,
and among equals the smallest margin between the top two subtypes. A reviewed Label Studio export
comes back through ``extract --format labelstudio`` (or a COCO export through ``--format coco``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.etree import ElementTree

from defectkit.errors import DefectkitError
from defectkit.defect import defects_from_record
from defectkit.export import CocoWriter
from defectkit.images import atomic_write_text

TARGETS = ("labelstudio", "coco", "cvat")
FROM_NAME, TO_NAME = "label", "image"  # the names in the labelling config: <PolygonLabels name="label" toName="image">


def read_records(run: Path) -> list[dict]:
    """The per-image records of a classify (or segment) output folder."""
    records = []
    for path in sorted(run.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and {"image", "size", "defects"} <= set(record):
            records.append(record)
    if not records:
        raise DefectkitError(f"{run}: no per-image results (<name>.json, as classify writes them)")
    return records


def priority(record: dict) -> tuple[float, float]:
    """Lower first: the least confident defect's confidence, then its top-two margin."""
    keys = []
    for d in record["defects"]:
        scores = sorted(((d.get("scores") or {}).get("subtype") or {}).values(), reverse=True)
        margin = scores[0] - scores[1] if len(scores) > 1 else 1.0
        keys.append((d.get("confidence") if d.get("confidence") is not None else 1.0, margin))
    return min(keys, default=(2.0, 2.0))  # images without a defect last


def relative_to_root(image: str, root: Path) -> str:
    path = os.path.relpath(Path(image).resolve(), root.resolve())
    if path.startswith(".."):
        raise DefectkitError(f"{image} is not under --root {root}: choose the folder that holds all the images")
    return Path(path).as_posix()


def export_review(run: str | Path, target: str, root: str | Path, out: str | Path, url_prefix: str = "") -> int:
    """Write ``run``'s predictions to ``out`` for ``target``; returns the number of images."""
    if target not in TARGETS:
        raise DefectkitError(f"--to must be one of {', '.join(TARGETS)}, got {target!r}")
    run, root, out = Path(run), Path(root), Path(out)
    records = sorted(read_records(run), key=priority)
    relative = [relative_to_root(r["image"], root) for r in records]
    if target == "labelstudio":
        tasks = [_task(r, url_prefix + rel, root.resolve(), rank) for rank, (r, rel) in enumerate(zip(records, relative))]
        atomic_write_text(out, json.dumps(tasks, indent=1))
    elif target == "coco":
        coco = CocoWriter(segmentation="polygon")
        for record, rel in zip(records, relative):
            coco.add(rel, tuple(record["size"]), defects_from_record(record))
        coco.write(out)
    else:
        atomic_write_text(out, _cvat(records, relative))
    return len(records)


def _task(record: dict, image: str, root: Path, rank: int) -> dict:
    width, height = record["size"]
    results = []
    for d in record["defects"]:
        results.append({
            "id": f"d{d['id']}", "type": "polygonlabels", "from_name": FROM_NAME, "to_name": TO_NAME,
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"points": [[100 * x / width, 100 * y / height] for x, y in d["polygon"]],
                      "polygonlabels": [d.get("subtype") or d.get("category") or "defect"]},
            "score": d.get("confidence"),
        })
    confidences = [d["confidence"] for d in record["defects"] if d.get("confidence") is not None]
    return {
        "data": {TO_NAME: image, "defectkit_root": str(root), "review_rank": rank},
        "predictions": [{"model_version": str((record.get("model") or {}).get("path", "defectkit")),
                         "score": min(confidences, default=None), "result": results}],
    }


def _cvat(records: list[dict], relative: list[str]) -> str:
    root = ElementTree.Element("annotations")
    ElementTree.SubElement(root, "version").text = "1.1"
    for index, (record, rel) in enumerate(zip(records, relative)):
        width, height = record["size"]
        image = ElementTree.SubElement(root, "image", id=str(index), name=rel, width=str(width), height=str(height))
        for d in record["defects"]:
            points = ";".join(f"{x:.1f},{y:.1f}" for x, y in d["polygon"])
            polygon = ElementTree.SubElement(image, "polygon", label=d.get("subtype") or d.get("category") or "defect",
                                             points=points, occluded="0", source="auto")
            if d.get("confidence") is not None:
                ElementTree.SubElement(polygon, "attribute", name="confidence").text = f"{d['confidence']:.4f}"
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
