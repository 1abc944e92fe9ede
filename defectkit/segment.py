"""`defectkit segment`: propose masks and turn them into polygons, for a batch of images.

Writes, in the output folder, per image ``<name>.json`` (image, size, proposer and its settings,
defects with polygons, boxes, areas, edge counts and shape features) and ``<name>.png`` (overlay),
and for the whole run ``coco.json`` (COCO instances, RLE masks), ``defects.csv`` (one row per
defect) and ``errors.jsonl`` (images that failed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectkit.batch import BatchReport, expand_inputs, output_names, run_batch
from defectkit.defect import Defect
from defectkit.errors import DefectkitError
from defectkit.export import CocoWriter, csv_rows, defects_from_record, image_record, write_csv, write_json, write_overlay
from defectkit.geometry import defects_from_mask
from defectkit.propose.base import Proposer

COCO_FILE = "coco.json"
CSV_FILE = "defects.csv"


@dataclass(frozen=True)
class SegmentOptions:
    min_area: int = 10  # regions smaller than this many pixels are dropped
    polygon_tolerance: float = 1.0
    overlays: bool = True
    resume: bool = False  # keep results already in the output folder


def polygonize(proposer: Proposer, image: np.ndarray, image_path: str | Path = "", min_area: int = 10, polygon_tolerance: float = 1.0) -> list[Defect]:
    """Propose masks for one image and describe every connected region of each as a Defect
    (ids 1, 2, ... in proposal order)."""
    defects: list[Defect] = []
    for mask in proposer.propose(image, image_path=str(image_path)):
        defects += defects_from_mask(image, mask, str(image_path), min_area, polygon_tolerance)
    for number, defect in enumerate(defects, start=1):
        defect.id = number
    return defects


def segment(inputs: list[str | Path], out: str | Path, proposer: Proposer, options: SegmentOptions = SegmentOptions(), progress: bool = True) -> BatchReport:
    out = Path(out)
    paths = expand_inputs(inputs)
    clash = next((p for p, name in output_names(paths).items() if (out / f"{name}.png").resolve() == p.resolve()), None)
    if clash is not None:
        raise DefectkitError(f"{clash} would be overwritten by its own overlay: choose an --out folder apart from the inputs")
    coco = CocoWriter()
    rows: list[dict] = []
    description = proposer.describe()

    def process(path: Path, name: str, image: np.ndarray) -> None:
        defects = polygonize(proposer, image, path, options.min_area, options.polygon_tolerance)
        size = (image.shape[1], image.shape[0])
        write_json(out / f"{name}.json", image_record(path, size, defects, proposer=description))
        if options.overlays:
            write_overlay(out / f"{name}.png", image, defects)
        coco.add(path, size, defects)
        rows.extend(csv_rows(defects))

    def done(path: Path, name: str) -> bool:
        result = out / f"{name}.json"
        if not (options.resume and result.is_file()):
            return False
        try:
            record = json.loads(result.read_text())
            defects = defects_from_record(record)
        except (ValueError, KeyError, TypeError):
            return False  # unreadable earlier result: do the image again
        coco.add(record["image"], tuple(record["size"]), defects)
        rows.extend(csv_rows(defects))
        return True

    report = run_batch(paths, out, process, done=done, progress=progress, desc="segment")
    coco.write(out / COCO_FILE)
    write_csv(out / CSV_FILE, rows)
    return report
