"""The files one ``segment`` or ``classify`` run writes into its output folder, and how a resumed
run reads them back.

Per image ``<name>.json`` and, as ``overlays`` says (all; defects: only images with one; none),
``<name>.png`` (or .jpg). For the run: the CSV (one row per defect), the COCO file, ``images.csv``
(one verdict per image: ok, defect, uncertain or failed) and ``report.html``. An image's JSON is
written after its overlay, so it marks the image done. The CSV and COCO rows are built from each
record as it reads back from its JSON, so a resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import quote

import numpy as np

from defectkit.defect import defects_from_record
from defectkit.errors import DefectkitError
from defectkit.export import (OVERLAY_FORMATS, OVERLAYS, VERDICT_COLUMNS, csv_rows, dumps, image_verdict,
                              write_csv, write_overlay)
from defectkit.images import atomic_write_text


def check_overlay_options(overlays: str, overlay_format: str) -> None:
    if overlays not in OVERLAYS or overlay_format not in OVERLAY_FORMATS:
        raise DefectkitError(f"--overlays must be one of {', '.join(OVERLAYS)} and --overlay-format one of "
                             f"{', '.join(OVERLAY_FORMATS)}; got {overlays!r}, {overlay_format!r}")


class RunFiles:
    """The output folder of one run: ``write`` an image's results, ``earlier`` reads a finished
    image back (resume), ``finish`` writes the run's CSVs, COCO file and report."""

    def __init__(self, out: str | Path, coco, overlays: str = "all", overlay_format: str = "png", resume: bool = False,
                 classes: Sequence[str] = (), csv_file: str = "defects.csv", coco_file: str | None = "coco.json",
                 verdicts_file: str = "images.csv", coco_kind: str = "instances"):
        check_overlay_options(overlays, overlay_format)
        self.out, self.coco, self.overlays, self.overlay_format = Path(out), coco, overlays, overlay_format
        self.resume, self.classes = resume, classes
        self.csv_file, self.coco_file, self.verdicts_file, self.coco_kind = csv_file, coco_file, verdicts_file, coco_kind
        self.rows: list[dict] = []
        self.verdicts: dict[str, dict] = {}
        self.links: dict[str, tuple[str | None, str]] = {}  # per image: its overlay and JSON, as links for the report

    @property
    def reserved(self) -> set[str]:
        """Names no image may take (an image called ``coco`` would overwrite the COCO file)."""
        return {Path(self.coco_file).stem} if self.coco_file else set()

    def drawn(self, defects: list) -> bool:
        return self.overlays == "all" or (self.overlays == "defects" and bool(defects))

    def write(self, name: str, image: np.ndarray, record: dict, defects: list) -> None:
        if self.drawn(defects):
            write_overlay(self.out / f"{name}.{self.overlay_format}", image, defects, self.classes)
        text = dumps(record)
        atomic_write_text(self.out / f"{name}.json", text)  # last: an image is done when its JSON is there
        self._collect(json.loads(text), name)

    def earlier(self, name: str) -> Callable[[], None] | None:
        """With ``resume``, a function that takes in the image's finished results; None when the image
        must be done (again): no JSON, an unreadable one, or its overlay missing."""
        result = self.out / f"{name}.json"
        if not (self.resume and result.is_file()):
            return None
        try:
            record = json.loads(result.read_text())
            defects_from_record(record)
        except (ValueError, KeyError, TypeError):
            return None
        if self.drawn(record["defects"]) and not (self.out / f"{name}.{self.overlay_format}").is_file():
            return None
        return lambda: self._collect(record, name)

    def _collect(self, record: dict, name: str) -> None:
        defects = defects_from_record(record)
        self.coco.add(record["image"], tuple(record["size"]), defects)
        self.rows.extend(csv_rows(defects))
        self.verdicts[record["image"]] = image_verdict(record)
        overlay = f"{name}.{self.overlay_format}" if self.drawn(record["defects"]) else None
        self.links[record["image"]] = (overlay and _link(overlay), _link(f"{name}.json"))

    def remove_stale(self) -> None:
        """Temporary files half-written by a run that was killed (call under the run's lock)."""
        for stale in self.out.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def finish(self, paths: list[Path], failed: set[str], desc: str) -> list[dict]:
        """Write the run's summary files; returns one verdict row per image, in input order."""
        from defectkit.report import write_run_report  # jinja2: only when a run ends

        images = [self.verdicts.get(str(p)) or {"image": str(p), "verdict": "failed", "defects": 0}
                  for p in paths if str(p) in self.verdicts or str(p) in failed]
        try:
            write_csv(self.out / self.csv_file, self.rows)
            write_csv(self.out / self.verdicts_file, images, VERDICT_COLUMNS)
            write_run_report(self.out, images, self.rows, self.links, desc, f"{len(paths)} inputs")
            if self.coco_file:
                self.coco.write(self.out / self.coco_file, kind=self.coco_kind)
        except OSError as exc:
            raise DefectkitError(f"cannot write the run's summary into {self.out} ({exc.strerror or exc}); the per-image "
                                 "results are kept: make room and run again with --resume") from exc
        return images


def _link(file_name: str) -> str:
    """A file name of the output folder as a relative link (any byte percent-encoded)."""
    return quote(os.fsencode(file_name))
