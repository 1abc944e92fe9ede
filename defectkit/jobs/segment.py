"""`defectkit segment`: propose masks and turn them into polygons, for a batch of images.

Writes, in the output folder, per image ``<name>.json`` (image, size, proposer and its settings,
defects with polygons, boxes, areas, edge counts and shape features) and ``<name>.png`` (overlay),
and for the whole run ``coco.json`` (COCO instances, RLE masks), ``defects.csv`` (one row per
defect) and ``errors.jsonl`` (images that failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defectkit.jobs.batch import BatchReport, read_each, write_results
from defectkit.defect import Defect
from defectkit.defect import image_record
from defectkit.export import CocoWriter
from defectkit.geometry import polygonize
from defectkit.propose.base import Proposer
from defectkit.run_files import RunFiles, check_overlay_options

COCO_FILE = "coco.json"
CSV_FILE = "defects.csv"


@dataclass(frozen=True)
class SegmentOptions:
    min_area: int = 10  # regions smaller than this many pixels are dropped
    polygon_tolerance: float = 1.0
    overlays: str = "all"  # all | defects | none
    overlay_format: str = "png"  # png | jpg
    resume: bool = False  # keep results already in the output folder

    def __post_init__(self):
        check_overlay_options(self.overlays, self.overlay_format)


def segment(inputs: list[str | Path], out: str | Path, proposer: Proposer, options: SegmentOptions = SegmentOptions(), progress: bool = True) -> BatchReport:
    description = proposer.describe()

    def analyse(path: Path, image: np.ndarray) -> tuple[dict, list[Defect]]:
        masks = proposer.propose(image, image_path=str(path))
        defects = polygonize(masks, image, path, options.min_area, options.polygon_tolerance)
        return image_record(path, (image.shape[1], image.shape[0]), defects, proposer=description), defects

    return _write(inputs, out, read_each(analyse), options, progress)


def segment_on_ray(inputs: list[str | Path], out: str | Path, options: SegmentOptions = SegmentOptions(), progress: bool = True,
                   **ray_settings) -> BatchReport:
    """As :func:`segment`, the images segmented by an actor pool on Ray (see :mod:`defectkit.distributed`;
    ``ray_settings``: proposer, proposer_options, proposer_model, workers, cpus_per_worker,
    gpus_per_worker, device); the files written are the same."""
    from defectkit.distributed import ray_outcomes, segment_dataset

    outcomes = ray_outcomes(segment_dataset, min_area=options.min_area, polygon_tolerance=options.polygon_tolerance, **ray_settings)
    return _write(inputs, out, outcomes, options, progress)


def _write(inputs, out, outcomes, options: SegmentOptions, progress: bool) -> BatchReport:
    files = RunFiles(out, CocoWriter(), options.overlays, options.overlay_format, options.resume, csv_file=CSV_FILE, coco_file=COCO_FILE)
    report, _ = write_results(inputs, out, outcomes, files, desc="segment", progress=progress)
    return report
