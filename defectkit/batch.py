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
from defectkit.data.masks import _pair_up
from defectkit.errors import DefectkitError
from defectkit.images import IMAGE_SUFFIXES, atomic_write_text, read_image

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
            out += list(_pair_up(find_images(path)))
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
) -> BatchReport:
    """Call ``process(path, name, image)`` for each image (read as RGB uint8) in turn.

    ``done(path, name)`` returning True skips an image (resume). An image whose reading or
    processing raises is recorded in ``out/errors.jsonl`` (image, error type, message), rewritten
    atomically after each failure, and the run goes on. ``errors.jsonl`` is always written: empty
    when nothing failed.
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
            process(path, name, read_image(path))
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
