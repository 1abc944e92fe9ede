"""Defects to files: the one place for format conversions (per-image JSON, CSV rows, COCO, overlays).

Works the same for proposals (``segment``) and for classified defects (``classify``): a Defect's
``category``, ``subtype``, ``confidence`` and ``scores`` are written where they are set. Every file
is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from defectkit.defect import Defect
from defectkit.geometry import Region
from defectkit.jsonable import to_jsonable
from defectkit.images import atomic_write_bytes, atomic_write_text, write_png
from defectkit.taxonomy import UNCERTAIN

UNCLASSIFIED = "defect"  # the COCO category and overlay label of defects nobody has classified


# --- per-image JSON ------------------------------------------------------------------------------
def dumps(record: dict) -> str:
    """JSON with one line per top-level key, and one line per item of a list of objects (one
    line per defect): readable, and diffs show which defect changed."""
    lines = []
    for key, value in to_jsonable(record).items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"  {json.dumps(v)}" for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_json(path: str | Path, record: dict) -> None:
    atomic_write_text(path, dumps(record))


# --- CSV -----------------------------------------------------------------------------------------
# (no annotation label: segment and classify find defects, they are never handed a label)
CSV_COLUMNS = ("image", "id", "category", "subtype", "confidence", "area", "edges",
               "bbox_x", "bbox_y", "bbox_w", "bbox_h", "polygon")


def csv_rows(defects: list[Defect]) -> list[dict]:
    """One row per defect; the polygon as ``x y;x y;...``."""
    rows = []
    for d in defects:
        x, y, w, h = d.bbox
        rows.append({
            "image": d.image, "id": d.id, "category": d.category or "", "subtype": d.subtype or "",
            "confidence": "" if d.confidence is None else round(float(d.confidence), 4),
            "area": d.area, "edges": d.edges, "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h,
            "polygon": ";".join(f"{px} {py}" for px, py in d.polygon),
        })
    return rows


def write_csv(path: str | Path, rows: list[dict], columns: tuple[str, ...] = CSV_COLUMNS) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


VERDICT_COLUMNS = ("image", "verdict", "defects", "worst_subtype", "worst_confidence", "proposer", "model")
VERDICTS = ("ok", "defect", "uncertain", "failed")


def image_verdict(record: dict) -> dict:
    """One row per image for ``images.csv``: ``ok`` (no defect), ``defect`` (at least one named
    defect), ``uncertain`` (only defects the classifier was unsure of); the worst defect is the most
    confident named one."""
    defects = record.get("defects") or []
    named = [d for d in defects if (d.get("subtype") or d.get("category") or UNCLASSIFIED) != UNCERTAIN]
    verdict = "defect" if named else "uncertain" if defects else "ok"
    worst = max(named or defects, key=lambda d: d.get("confidence") or 0.0, default=None)
    return {
        "image": record["image"], "verdict": verdict, "defects": len(defects),
        "worst_subtype": (worst.get("subtype") or worst.get("category") or "") if worst else "",
        "worst_confidence": "" if worst is None or worst.get("confidence") is None else round(float(worst["confidence"]), 4),
        "proposer": _proposer_name(record.get("proposer") or {}),
        "model": (record.get("model") or {}).get("path", ""),
    }


def _proposer_name(proposer: dict) -> str:
    """``auto (classical)`` for auto's choice, else the proposer's name."""
    chosen = (proposer.get("chose") or {}).get("name")
    return f"{proposer.get('name', '')} ({chosen})" if chosen else proposer.get("name", "")


# --- COCO ----------------------------------------------------------------------------------------
def defect_name(d: Defect) -> str:
    return d.subtype or d.category or UNCLASSIFIED


def defect_mask(d: Defect) -> np.ndarray:
    """The defect's full-size boolean mask: its region when in memory, else its polygon less its holes."""
    width, height = d.image_size
    if d.region is not None:
        return d.region.full_mask((height, width))
    mask = Region.from_polygon(d.polygon, (height, width)).full_mask((height, width))
    for hole in d.holes:
        mask &= ~Region.from_polygon(hole, (height, width)).full_mask((height, width))
    return mask


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


class CocoWriter:
    """Collects images and their defects; writes one COCO instances file (``instances()``: images,
    annotations, categories) or results file (``results()``: the annotation list with scores).

    ``segmentation="rle"`` (exact, holes included; what COCO results files and pycocotools expect)
    or ``"polygon"`` (outer ring only, editable in annotation tools). Categories are the given
    names, then names seen in order; an unclassified defect is ``defect``.
    """

    def __init__(self, categories: list[str] | None = None, segmentation: str = "rle", supercategories: dict[str, str] | None = None):
        if segmentation not in ("rle", "polygon"):
            raise ValueError(f"segmentation must be 'rle' or 'polygon', got {segmentation!r}")
        self.segmentation = segmentation
        self.supercategories = supercategories or {}
        self.category_ids: dict[str, int] = {}
        for name in categories or []:
            self._category(name)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def _category(self, name: str) -> int:
        return self.category_ids.setdefault(name, len(self.category_ids) + 1)

    def add(self, image: str | Path, size: tuple[int, int], defects: list[Defect]) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": str(image), "width": int(size[0]), "height": int(size[1])})
        for d in defects:
            annotation = {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": self._category(defect_name(d)),
                "bbox": [int(v) for v in d.bbox],
                "area": int(d.area),
                "iscrowd": 0,
                "score": 1.0 if d.confidence is None else float(d.confidence),
                "segmentation": self._segmentation(d),
            }
            self.annotations.append(annotation)
        return image_id

    def _segmentation(self, d: Defect):
        # pycocotools reads a 4-number polygon as a box: such thin regions go as RLE
        if self.segmentation == "polygon" and len(d.polygon) >= 3:
            return [[float(c) for point in d.polygon for c in point]]
        return rle(defect_mask(d))

    def categories(self) -> list[dict]:
        return [
            {"id": i, "name": name, "supercategory": self.supercategories.get(name, name)}
            for name, i in self.category_ids.items()
        ]

    def instances(self) -> dict:
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories()}

    def results(self) -> list[dict]:
        keys = ("image_id", "category_id", "bbox", "score", "segmentation")
        return [{k: a[k] for k in keys} for a in self.annotations]

    def write(self, path: str | Path, kind: str = "instances") -> Path:
        """Write the instances (default) or results file at ``path``."""
        data = self.instances() if kind == "instances" else self.results()
        atomic_write_text(path, json.dumps(data))
        return Path(path)


# --- overlay -------------------------------------------------------------------------------------
# Saturated colours of middle lightness, each outlined in black: they stand out on dark and on light
# gray parts alike. A class takes the colour of its place in the taxonomy, so neighbouring classes
# never share one (a hash of the name gave fray, blowhole and crack nearly the same orange).
PALETTE = [
    (255, 128, 0), (0, 190, 255), (235, 0, 235), (0, 210, 80), (255, 215, 0),
    (150, 90, 255), (0, 200, 180), (255, 90, 160), (170, 230, 0), (255, 170, 120),
]
UNCLASSIFIED_COLOUR = (255, 40, 40)
OK_COLOUR = (0, 200, 80)
OVERLAYS = ("all", "defects", "none")  # which images get an overlay
OVERLAY_FORMATS = ("png", "jpg")


def colour_of(name: str | None, classes: Sequence[str] = ()) -> tuple[int, int, int]:
    """The colour of a class: by its place in ``classes`` (the taxonomy's order), else fixed by its
    name; red when unclassified."""
    if not name:
        return UNCLASSIFIED_COLOUR
    if name in classes:
        return PALETTE[list(classes).index(name) % len(PALETTE)]
    return PALETTE[zlib.crc32(name.encode("utf-8", errors="surrogateescape")) % len(PALETTE)]


def label_of(d: Defect) -> str:
    if d.subtype or d.category:
        name = d.subtype or d.category
        return name if d.confidence is None else f"{name} {d.confidence:.2f}"
    return f"#{d.id}"


def overlay(image: np.ndarray, defects: list[Defect], classes: Sequence[str] = (), fill: float = 0.25) -> np.ndarray:
    """The image (RGB, same size) with each defect's outline (in its class's colour over a black
    edge) and a translucent fill, its label (class and confidence, or #id) in white on a dark plate,
    a legend of the classes shown, or an OK stamp when there is no defect."""
    canvas = image.copy() if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    filled = canvas.copy()
    outlines = []
    for d in defects:
        colour = colour_of(d.subtype or d.category, classes)
        rings = [np.asarray(d.polygon, dtype=np.int32)] + [np.asarray(h, dtype=np.int32) for h in d.holes]
        inside = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(inside, rings[:1], 1)
        if len(rings) > 1:
            cv2.fillPoly(inside, rings[1:], 0)
        filled[inside.astype(bool)] = colour
        outlines.append((rings, colour))
    canvas = cv2.addWeighted(filled, fill, canvas, 1 - fill, 0)
    for rings, colour in outlines:
        cv2.polylines(canvas, rings, isClosed=True, color=(0, 0, 0), thickness=thickness + 2, lineType=cv2.LINE_AA)
        cv2.polylines(canvas, rings, isClosed=True, color=colour, thickness=thickness, lineType=cv2.LINE_AA)
    for d in defects:
        _plate(canvas, label_of(d), d.bbox, colour_of(d.subtype or d.category, classes))
    if not defects:
        _plate(canvas, "OK", (2, 2, 0, 0), OK_COLOUR, below=True)
    else:
        shown = list(dict.fromkeys(d.subtype or d.category or UNCLASSIFIED for d in defects))
        _legend(canvas, [(name, colour_of(None if name == UNCLASSIFIED else name, classes)) for name in shown])
    return canvas


def _text_scale(canvas: np.ndarray) -> float:
    return max(0.35, min(canvas.shape[:2]) / 700)


def _plate(canvas: np.ndarray, text: str, bbox, colour, below: bool = False) -> None:
    """``text`` in white on a dark plate edged in ``colour``, above the box (or below it)."""
    height, width = canvas.shape[:2]
    scale, font = _text_scale(canvas), cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    x, y, _, h = bbox
    x = int(min(max(0, x), max(0, width - tw - 4)))
    above = y - th - base - 4
    top = int(max(0, y if below else above if above >= 0 else min(height - th - base - 4, y + h + 2)))
    cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + base + 4), (20, 20, 20), thickness=-1)
    cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + base + 4), colour, thickness=1)
    cv2.putText(canvas, text, (x + 2, top + th + 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _legend(canvas: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    """A swatch and name per class shown, bottom left, on a dark plate."""
    height = canvas.shape[0]
    scale, font = _text_scale(canvas), cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(name, font, scale, 1) for name, _ in entries]
    line = max(th + base for (_, th), base in sizes) + 4
    swatch = line - 6
    panel_w = max(tw for (tw, _), _ in sizes) + swatch + 12
    top = max(0, height - line * len(entries) - 4)
    cv2.rectangle(canvas, (0, top), (panel_w, height), (20, 20, 20), thickness=-1)
    for i, (name, colour) in enumerate(entries):
        y = top + 2 + i * line
        cv2.rectangle(canvas, (4, y + 3), (4 + swatch, y + 3 + swatch), colour, thickness=-1)
        cv2.putText(canvas, name, (8 + swatch, y + line - 6), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def write_overlay(path: str | Path, image: np.ndarray, defects: list[Defect], classes: Sequence[str] = ()) -> None:
    """PNG, or JPEG (quality 90, a fifth of the size) when ``path`` ends in .jpg."""
    picture = overlay(image, defects, classes)
    if Path(path).suffix.lower() == ".jpg":
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise OSError(f"could not encode JPEG for {path}")
        atomic_write_bytes(path, encoded.tobytes())
    else:
        write_png(path, picture)
