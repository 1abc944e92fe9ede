"""`defectkit classify`: propose, polygonize, crop, embed and classify a batch of images.

Writes, in the output folder, per image ``<name>.json`` (image, size, proposer, model, and per
defect: id, polygon, bbox, area, edges, category, subtype, confidence, scores of both levels) and
``<name>.png`` (overlay), and for the run ``summary.csv`` (one row per defect), ``errors.jsonl``
and, with ``coco``, ``coco.json`` (COCO instances with a score per annotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectkit.batch import BatchReport, write_results
from defectkit.export import CocoWriter
from defectkit.pipeline import UNCERTAIN, DefectClassifier
from defectkit.timing import Timings

SUMMARY_CSV = "summary.csv"
COCO_FILE = "coco.json"


@dataclass(frozen=True)
class ClassifyOptions:
    coco: bool = False
    overlays: bool = True
    resume: bool = False


def classify_images(inputs: list[str | Path], out: str | Path, classifier: DefectClassifier,
                    options: ClassifyOptions = ClassifyOptions(), progress: bool = True,
                    timings: Timings | None = None) -> tuple[BatchReport, list[dict]]:
    """Classify every image of ``inputs`` into ``out``; returns the batch report and the CSV rows.
    ``timings`` adds the seconds of each stage (read, propose, polygonize, crop, embed, classify, write)."""
    taxonomy = classifier.bundle.taxonomy
    coco = CocoWriter(categories=[*taxonomy.subtypes, UNCERTAIN],
                      supercategories={s: taxonomy.category_of(s) for s in taxonomy.subtypes})

    def analyse(path: Path, image: np.ndarray):
        result = classifier.classify(image, image_path=path, timings=timings)
        return result.to_json(), result.defects

    return write_results(inputs, out, analyse, coco, overlays=options.overlays, resume=options.resume,
                         csv_file=SUMMARY_CSV, coco_file=COCO_FILE if options.coco else None,
                         desc="classify", progress=progress, timings=timings)
