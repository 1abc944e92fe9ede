"""Running one step over many images: inputs expanded, one output name per image, images streamed
one at a time, a bad image recorded in ``errors.jsonl`` while the run goes on, a progress bar.

Shared by ``segment`` and ``classify``; they differ only in the per-image function they pass in.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from defectkit.data import find_images
from defectkit.data.masks import pair_images
from defectkit.errors import DefectkitError
from defectkit.images import IMAGE_SUFFIXES, atomic_write_text, read_image
from defectkit.timing import Timings, stage

ERRORS = "errors.jsonl"
LOCK = ".defectkit.lock"
# the disk, not the image: no later image can be written either, so the run stops
FATAL_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
LIST_SUFFIXES = (".txt", ".lst")


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Image paths from files, folders (recursed; mask files beside their images are skipped) and
    text files listing one path per line (relative to the list's folder; ``#`` starts a comment).
    Order is kept, duplicates dropped. A path given here that does not exist is an error before
    anything runs; one listed in a text file is kept, to be reported as failed (one stale line
    must not stop a list of thousands)."""
    missing = [str(i) for i in inputs if not Path(i).exists() and not Path(i).is_symlink()]
    if missing:
        raise DefectkitError(f"input not found: {', '.join(missing[:5])}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
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


def output_names(paths: list[Path], reserved: Collection[str] = ()) -> dict[Path, str]:
    """Each image's output name: its stem; where that is shared (or ``reserved`` for a file of the
    run, such as ``coco``), its path with separators turned into ``__``; where that is still shared
    (``a.jpg`` and ``a.png``), the same with the suffix; last, a short hash of the path. The same
    inputs always give the same names, and no two inputs share one."""
    spellings = (
        lambda p: p.stem,
        lambda p: _joined(p.with_suffix("")),
        lambda p: _joined(p),
        lambda p: f"{_joined(p)}__{hashlib.sha256(os.fsencode(str(p))).hexdigest()[:8]}",
    )
    names: dict[Path, str] = {}
    pending = list(paths)
    for spell in spellings:
        counts, taken = Counter(spell(p) for p in pending), {*names.values(), *reserved}
        names.update({p: spell(p) for p in pending if counts[spell(p)] == 1 and spell(p) not in taken})
        pending = [p for p in pending if p not in names]
    return names


def _joined(path: Path) -> str:
    return "__".join(part for part in path.parts if part not in ("/", "..", ".")).replace(":", "")


def check_out_apart(inputs: list[str | Path], paths: list[Path], out: Path) -> None:
    """Refuse an output folder that is, or is inside, an input folder, or that holds input images:
    its results would overwrite inputs (the overlay ``a.png`` is the mask of ``a.jpg`` in the masks
    layout) and be read as inputs by the next run."""
    real = lambda p: Path(os.path.realpath(p))  # noqa: E731 - unlike Path.resolve, never raises on a symlink loop
    target = real(out)
    folders = {real(i) for i in inputs if Path(i).is_dir()}
    for folder in folders:
        if target == folder or folder in target.parents:
            raise DefectkitError(f"--out {out} is inside the input folder {folder}: results there would overwrite "
                                 "inputs and be read as inputs next time; choose an --out folder apart from the inputs "
                                 "(nothing was written)")
    holder = next((p for p in paths if real(p).parent == target), None)
    if holder is not None:
        raise DefectkitError(f"--out {out} holds the input {holder}: choose an --out folder apart from the inputs "
                             "(nothing was written)")


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """One run at a time writes into ``out``: a second one gets an error instead of mixing its
    rows into the first one's CSV and COCO (an OS file lock: freed when the process dies)."""
    from filelock import FileLock, Timeout

    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / LOCK).touch()
    except OSError as exc:
        raise DefectkitError(f"cannot write into --out {out} ({exc.strerror or exc}); choose a folder you can write to") from exc
    lock = FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DefectkitError(f"another defectkit run is writing into {out}; wait for it to end or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


@dataclass
class BatchReport:
    out: Path
    done: int = 0
    skipped: int = 0  # already had results (resume)
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    images: list[dict] = field(default_factory=list)  # one verdict row per image, in input order

    @property
    def errors_path(self) -> Path:
        return self.out / ERRORS


Outcome = tuple[Path, "np.ndarray | None", object]  # (path, image, analysis or the exception that stopped it)
Outcomes = Callable[[Iterable[Path]], Iterator[Outcome]]


def read_each(analyse: Callable[[Path, np.ndarray], object], timings: Timings | None = None) -> Outcomes:
    """The outcomes of ``analyse(path, image)`` on each image read in turn (``read`` timed)."""

    def outcomes(paths: Iterable[Path]) -> Iterator[Outcome]:
        for path in paths:
            try:
                with stage(timings, "read"):
                    image = read_image(path)
                yield path, image, analyse(path, image)
            except Exception as exc:  # one bad image must not end a run over thousands
                yield path, None, exc

    return outcomes


def run_batch(
    paths: list[Path],
    out: str | Path,
    outcomes: Outcomes,
    process: Callable[[Path, str, np.ndarray, object], None],
    earlier: Callable[[Path, str], Callable[[], None] | None] | None = None,
    progress: bool = True,
    desc: str = "images",
    reserved: Collection[str] = (),
) -> BatchReport:
    """Call ``process(path, name, image, analysis)`` for each outcome of ``outcomes(paths)``, in
    the order of ``paths`` (``outcomes`` yields one per path, in order, and may work ahead).

    ``earlier(path, name)`` returning a function skips an image (resume): it is asked for every
    image first, and the function it returned is called in the image's turn. An image whose
    analysis or processing raised is recorded in ``out/errors.jsonl`` (image, error type,
    message), rewritten atomically after each failure, and the run goes on. ``errors.jsonl`` is
    always written: empty when nothing failed.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = BatchReport(out)
    names = output_names(paths, reserved)
    start = time.perf_counter()
    skip = {path: take for path in paths if earlier is not None and (take := earlier(path, names[path])) is not None}
    stream = outcomes(path for path in paths if path not in skip)
    bar = tqdm(paths, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for path in bar:
            if path in skip:
                skip[path]()
                report.skipped += 1
                continue
            given, image, analysis = next(stream)
            if given != path:
                raise RuntimeError(f"outcomes out of order: {given} came for {path}")
            try:
                if isinstance(analysis, Exception):
                    raise analysis
                process(path, names[path], image, analysis)
                report.done += 1
            except Exception as exc:  # one bad image must not end a run over thousands; a full disk does
                if isinstance(exc, OSError) and exc.errno in FATAL_WRITE_ERRORS:
                    raise DefectkitError(f"cannot write into {out} ({exc.strerror}); the results of the images before "
                                         f"{path} are kept: make room and run again with --resume") from exc
                _failed(report, path, exc)
                bar.set_postfix(failed=len(report.failed))
    finally:
        bar.close()
        stream.close()  # stops work ahead on images nobody will read (an interrupt)
    report.seconds = time.perf_counter() - start
    _write_errors(report)
    return report


def _failed(report: BatchReport, path: Path, exc: Exception) -> None:
    report.failed.append({"image": str(path), "error": type(exc).__name__, "message": str(exc)})
    _write_errors(report)


def _write_errors(report: BatchReport) -> None:
    try:
        atomic_write_text(report.errors_path, "".join(json.dumps(e) + "\n" for e in report.failed))
    except OSError as exc:
        raise DefectkitError(f"cannot write {report.errors_path} ({exc.strerror or exc}); the results written so far "
                             "are kept: make room and run again with --resume") from exc


def _link(file_name: str) -> str:
    """A file name of the output folder as a relative link (any byte percent-encoded)."""
    from urllib.parse import quote

    return quote(os.fsencode(file_name))


def check_overlay_options(overlays: str, overlay_format: str) -> None:
    from defectkit.export import OVERLAY_FORMATS, OVERLAYS

    if overlays not in OVERLAYS or overlay_format not in OVERLAY_FORMATS:
        raise DefectkitError(f"--overlays must be one of {', '.join(OVERLAYS)} and --overlay-format one of "
                             f"{', '.join(OVERLAY_FORMATS)}; got {overlays!r}, {overlay_format!r}")


def write_results(
    inputs: list[str | Path],
    out: str | Path,
    outcomes: Outcomes,
    coco,
    overlays: str = "all",
    resume: bool = False,
    csv_file: str = "defects.csv",
    coco_file: str | None = "coco.json",
    verdicts_file: str = "images.csv",
    coco_kind: str = "instances",
    desc: str = "images",
    progress: bool = True,
    timings: Timings | None = None,
    overlay_format: str = "png",
    classes: Sequence[str] = (),
) -> tuple[BatchReport, list[dict]]:
    """Take the analysis ``(image record, defects)`` of each image of ``inputs`` from ``outcomes``
    (a generator function, see :func:`read_each`) and write per image ``<name>.json`` and, as
    ``overlays`` says (all, defects: only images with one, none), ``<name>.png`` (or .jpg) overlays
    coloured by ``classes``; and for the run the CSV (one row per defect), ``coco_file``
    (``coco``, a CocoWriter), ``verdicts_file`` (one verdict row per image: ok, defect,
    uncertain or failed) and ``errors.jsonl``. An image's JSON is written after its
    overlay, so it marks the image done: with ``resume``, images whose JSON (and overlay) are
    already in ``out`` are read back instead of analysed again, and keep their
    place in the CSV and COCO. ``timings`` adds the seconds of ``write``."""
    from defectkit.export import VERDICT_COLUMNS, csv_rows, defects_from_record, dumps, image_verdict, write_csv, write_overlay
    from defectkit.report import write_run_report

    check_overlay_options(overlays, overlay_format)
    out = Path(out)
    paths = expand_inputs(inputs)
    check_out_apart(inputs, paths, out)
    drawn = lambda defects: overlays == "all" or (overlays == "defects" and bool(defects))  # noqa: E731
    rows: list[dict] = []
    verdicts: dict[str, dict] = {}
    files: dict[str, tuple[str | None, str]] = {}  # per image: its overlay and JSON, as links for the report

    def collect(record: dict, name: str) -> None:
        defects = defects_from_record(record)
        coco.add(record["image"], tuple(record["size"]), defects)
        rows.extend(csv_rows(defects))
        verdicts[record["image"]] = image_verdict(record)
        overlay = f"{name}.{overlay_format}" if drawn(record["defects"]) else None
        files[record["image"]] = (overlay and _link(overlay), _link(f"{name}.json"))

    def process(path: Path, name: str, image: np.ndarray, analysis: tuple[dict, list]) -> None:
        record, defects = analysis
        with stage(timings, "write"):
            if drawn(defects):
                write_overlay(out / f"{name}.{overlay_format}", image, defects, classes)
            text = dumps(record)
            atomic_write_text(out / f"{name}.json", text)  # last: an image is done when its JSON is there
            # the CSV and COCO from the record as a resumed run reads it back: the same files either way
            collect(json.loads(text), name)

    def earlier(path: Path, name: str):
        result = out / f"{name}.json"
        if not (resume and result.is_file()):
            return None
        try:
            record = json.loads(result.read_text())
            defects_from_record(record)
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable earlier result: do the image again
        if drawn(record["defects"]) and not (out / f"{name}.{overlay_format}").is_file():
            return None
        return lambda: collect(record, name)

    reserved = {Path(coco_file).stem} if coco_file else set()
    with output_lock(out):
        for stale in out.glob(".*.tmp"):  # half-written by a run that was killed (no run holds the lock now)
            stale.unlink(missing_ok=True)
        report = run_batch(paths, out, outcomes, process, earlier, progress=progress, desc=desc, reserved=reserved)
        failed = {f["image"] for f in report.failed}
        report.images = [verdicts.get(str(p)) or {"image": str(p), "verdict": "failed", "defects": 0}
                         for p in paths if str(p) in verdicts or str(p) in failed]
        try:
            write_csv(out / csv_file, rows)
            write_csv(out / verdicts_file, report.images, VERDICT_COLUMNS)
            write_run_report(out, report.images, rows, files, desc, f"{len(paths)} inputs")
            if coco_file:
                coco.write(out / coco_file, kind=coco_kind)
        except OSError as exc:
            raise DefectkitError(f"cannot write the run's summary into {out} ({exc.strerror or exc}); the per-image "
                                 "results are kept: make room and run again with --resume") from exc
    return report, rows
