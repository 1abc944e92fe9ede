"""Running one step over many images: inputs expanded, one output name per image, images streamed
one at a time, a bad image recorded in ``errors.jsonl`` while the run goes on, a progress bar.

Shared by ``segment`` and ``classify``; they differ only in the per-image function they pass in.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from defectkit.data import find_images
from defectkit.data.masks import pair_images
from defectkit.errors import DefectkitError
from defectkit.images import IMAGE_SUFFIXES, atomic_write_text, read_image
from defectkit.timing import Timings, stage

ERRORS = "errors.jsonl"
LIST_SUFFIXES = (".txt", ".lst")


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Image paths from files, folders (recursed; mask files beside their images are skipped) and
    text files listing one path per line (relative to the list's folder; ``#`` starts a comment).
    Order is kept, duplicates dropped; a path that does not exist is kept, to be reported as failed."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += list(pair_images(find_images(path)))
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    listed = Path(line)
                    out.append(listed if listed.is_absolute() else path.parent / listed)
        else:
            out.append(path)
    paths = list(dict.fromkeys(out))
    if not paths:
        raise DefectkitError(f"no images found in {', '.join(str(i) for i in inputs)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def output_names(paths: list[Path]) -> dict[Path, str]:
    """Each image's output name: its stem, or, where stems collide, its path with separators
    turned into ``__`` (the same inputs always give the same names)."""
    counts = Counter(p.stem for p in paths)
    names = {}
    for p in paths:
        if counts[p.stem] == 1:
            names[p] = p.stem
        else:
            parts = p.with_suffix("").parts
            names[p] = "__".join(part for part in parts if part not in ("/", "..", ".")).replace(":", "")
    return names


@dataclass
class BatchReport:
    out: Path
    done: int = 0
    skipped: int = 0  # already had results (resume)
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors_path(self) -> Path:
        return self.out / ERRORS


def run_batch(
    paths: list[Path],
    out: str | Path,
    process: Callable[[Path, str, np.ndarray], None],
    done: Callable[[Path, str], bool] | None = None,
    progress: bool = True,
    desc: str = "images",
    timings: Timings | None = None,
) -> BatchReport:
    """Call ``process(path, name, image)`` for each image (read as RGB uint8) in turn.

    ``done(path, name)`` returning True skips an image (resume). An image whose reading or
    processing raises is recorded in ``out/errors.jsonl`` (image, error type, message), rewritten
    atomically after each failure, and the run goes on. ``errors.jsonl`` is always written: empty
    when nothing failed. ``timings`` adds the seconds spent reading images (``read``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = BatchReport(out)
    names = output_names(paths)
    start = time.perf_counter()
    bar = tqdm(paths, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    for path in bar:
        name = names[path]
        if done is not None and done(path, name):
            report.skipped += 1
            continue
        try:
            with stage(timings, "read"):
                image = read_image(path)
            process(path, name, image)
            report.done += 1
        except Exception as exc:  # one bad image must not end a run over thousands
            report.failed.append({"image": str(path), "error": type(exc).__name__, "message": str(exc)})
            _write_errors(report)
            bar.set_postfix(failed=len(report.failed))
    bar.close()
    report.seconds = time.perf_counter() - start
    _write_errors(report)
    return report


def _write_errors(report: BatchReport) -> None:
    atomic_write_text(report.errors_path, "".join(json.dumps(e) + "\n" for e in report.failed))


def write_results(
    inputs: list[str | Path],
    out: str | Path,
    analyse: Callable[[Path, np.ndarray], tuple[dict, list]],
    coco,
    overlays: bool = True,
    resume: bool = False,
    csv_file: str = "defects.csv",
    coco_file: str | None = "coco.json",
    coco_kind: str = "instances",
    desc: str = "images",
    progress: bool = True,
    timings: Timings | None = None,
) -> tuple[BatchReport, list[dict]]:
    """Run ``analyse(path, image) -> (image record, defects)`` over the images of ``inputs`` and
    write per image ``<name>.json`` (and ``<name>.png`` overlays), and for the run the CSV (one row
    per defect), ``coco_file`` (``coco``, a CocoWriter) and ``errors.jsonl``. With ``resume``,
    images whose JSON is already in ``out`` are read back instead of analysed again. ``timings``
    adds the seconds of ``read`` and ``write`` (``analyse`` may add its own stages)."""
    from defectkit.export import csv_rows, defects_from_record, write_csv, write_json, write_overlay

    out = Path(out)
    paths = expand_inputs(inputs)
    clash = next((p for p, name in output_names(paths).items() if (out / f"{name}.png").resolve() == p.resolve()), None)
    if clash is not None:
        raise DefectkitError(f"{clash} would be overwritten by its own overlay: choose an --out folder apart from the inputs")
    rows: list[dict] = []

    def process(path: Path, name: str, image: np.ndarray) -> None:
        record, defects = analyse(path, image)
        with stage(timings, "write"):
            write_json(out / f"{name}.json", record)
            if overlays:
                write_overlay(out / f"{name}.png", image, defects)
            coco.add(path, tuple(record["size"]), defects)
            rows.extend(csv_rows(defects))

    def done(path: Path, name: str) -> bool:
        result = out / f"{name}.json"
        if not (resume and result.is_file()):
            return False
        try:
            record = json.loads(result.read_text())
            defects = defects_from_record(record)
        except (ValueError, KeyError, TypeError):
            return False  # an unreadable earlier result: do the image again
        coco.add(record["image"], tuple(record["size"]), defects)
        rows.extend(csv_rows(defects))
        return True

    report = run_batch(paths, out, process, done=done, progress=progress, desc=desc, timings=timings)
    write_csv(out / csv_file, rows)
    if coco_file:
        coco.write(out / coco_file, kind=coco_kind)
    return report, rows
