"""`defectkit classify`: propose, polygonize, crop, embed and classify a batch of images.

Writes, in the output folder, per image ``<name>.json`` (image, size, proposer, model, and per
defect: id, polygon, bbox, area, edges, category, subtype, confidence, scores of both levels) and
``<name>.png`` (overlay), and for the run ``summary.csv`` (one row per defect), ``errors.jsonl``
and, with ``coco``, ``coco.json`` (COCO instances with a score per annotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defectkit.jobs.batch import BatchReport, write_results
from defectkit.export import CocoWriter
from defectkit.pipeline import CHUNK_IMAGES, UNCERTAIN, DefectClassifier
from defectkit.run_files import RunFiles, check_overlay_options
from defectkit.timing import Timings

SUMMARY_CSV = "summary.csv"
COCO_FILE = "coco.json"


@dataclass(frozen=True)
class ClassifyOptions:
    coco: bool = False
    overlays: str = "all"  # all | defects | none
    overlay_format: str = "png"  # png | jpg
    resume: bool = False
    chunk_size: int = CHUNK_IMAGES  # images embedded and classified together
    workers: int = 1  # a thread proposing ahead (0: none)

    def __post_init__(self):
        check_overlay_options(self.overlays, self.overlay_format)


def classify_images(inputs: list[str | Path], out: str | Path, classifier: DefectClassifier,
                    options: ClassifyOptions = ClassifyOptions(), progress: bool = True,
                    timings: Timings | None = None) -> tuple[BatchReport, list[dict]]:
    """Classify every image of ``inputs`` into ``out``; returns the batch report and the CSV rows.
    ``timings`` adds the seconds of each stage (read, propose, polygonize, crop, embed, classify, write)."""

    def outcomes(paths):
        for path, image, result in classifier.stream(paths, timings, options.chunk_size, options.workers):
            yield path, image, result if isinstance(result, Exception) else (result.to_json(), result.defects)

    return _write(inputs, out, classifier.bundle.taxonomy, outcomes, options, progress, timings)


def classify_on_ray(inputs: list[str | Path], out: str | Path, model_dir: str | Path, options: ClassifyOptions = ClassifyOptions(),
                    progress: bool = True, **ray_settings) -> tuple[BatchReport, list[dict]]:
    """As :func:`classify_images`, the images classified by an actor pool on Ray (see
    :mod:`defectkit.distributed`; ``ray_settings``: proposer, proposer_options, workers,
    cpus_per_worker, gpus_per_worker, device, classifier_options); the files written are the same."""
    from defectkit.bundle import read_manifest
    from defectkit.distributed import classify_dataset, ray_outcomes
    from defectkit.taxonomy import Taxonomy

    taxonomy = Taxonomy(**{k: v for k, v in read_manifest(model_dir)["taxonomy"].items() if k in ("name", "categories", "aliases")})
    return _write(inputs, out, taxonomy, ray_outcomes(classify_dataset, model_dir, **ray_settings), options, progress, None)


def _write(inputs, out, taxonomy, outcomes, options: ClassifyOptions, progress: bool, timings) -> tuple[BatchReport, list[dict]]:
    coco = CocoWriter(categories=[*taxonomy.subtypes, UNCERTAIN],
                      supercategories={s: taxonomy.category_of(s) for s in taxonomy.subtypes})
    files = RunFiles(out, coco, options.overlays, options.overlay_format, options.resume, classes=[*taxonomy.subtypes, UNCERTAIN],
                     csv_file=SUMMARY_CSV, coco_file=COCO_FILE if options.coco else None)
    return write_results(inputs, out, outcomes, files, desc="classify", progress=progress, timings=timings)
