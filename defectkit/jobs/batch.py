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
from typing import Callable, Collection, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from defectkit.data import find_images, listed_paths
from defectkit.data.masks import pair_images
from defectkit.errors import DefectkitError
from defectkit.images import IMAGE_SUFFIXES, atomic_write_text, read_image
from defectkit.run_files import RunFiles
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
            out += listed_paths(path)
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


def write_results(
    inputs: list[str | Path],
    out: str | Path,
    outcomes: Outcomes,
    files: RunFiles,
    desc: str = "images",
    progress: bool = True,
    timings: Timings | None = None,
) -> tuple[BatchReport, list[dict]]:
    """Take the analysis ``(image record, defects)`` of each image of ``inputs`` from ``outcomes``
    (a generator function, see :func:`read_each`) and write it with ``files`` (per image JSON and
    overlay; for the run the CSVs, COCO file and report). With ``files.resume``, images already
    done in ``out`` are read back instead of analysed again, and keep their place in the CSV and
    COCO. ``timings`` adds the seconds of ``write``."""
    out = Path(out)
    paths = expand_inputs(inputs)
    check_out_apart(inputs, paths, out)

    def process(path: Path, name: str, image: np.ndarray, analysis: tuple[dict, list]) -> None:
        record, defects = analysis
        with stage(timings, "write"):
            files.write(name, image, record, defects)

    with output_lock(out):
        files.remove_stale()
        report = run_batch(paths, out, outcomes, process, lambda path, name: files.earlier(name), progress=progress, desc=desc,
                           reserved=files.reserved)
        report.images = files.finish(paths, {f["image"] for f in report.failed}, desc)
    return report, files.rows
