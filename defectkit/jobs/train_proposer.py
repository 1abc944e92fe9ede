"""`defectkit train-proposer`: a labelled data set in, a proposer bundle out."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

from defectkit.segmenter.bundle import save_proposer
from defectkit.segmenter.data import load_seg_data, split_seg_data
from defectkit.segmenter.train import TrainProposerConfig, train_network
from defectkit.taxonomy import Taxonomy


@dataclass
class TrainProposerResult:
    bundle: Path
    data: dict
    metrics: dict
    epochs: int
    seconds: float
    skipped: list[tuple[str, str]]


def state_file(out: str | Path) -> Path:
    """Where an interrupted run keeps its state (beside the bundle, removed when the bundle is written)."""
    out = Path(out)
    return out.with_name(f"{out.name}.train-state.pt")


def train_proposer(src: str | Path, format: str, taxonomy: Taxonomy, out: str | Path, config: TrainProposerConfig = TrainProposerConfig(),
                   device: str | None = None, progress: bool = True, log_dir: str | Path | None = None,
                   only: Collection[str | Path] | None = None, workers: int | None = None) -> TrainProposerResult:
    """Train on the images of ``src`` (``only``: just these image paths, e.g. a split's training part)."""
    config.validate()
    started = time.perf_counter()
    data = load_seg_data(src, format, taxonomy, config.box_fill, config.min_area, progress=progress)
    if only is not None:
        wanted = {str(Path(p)) for p in only}
        data.images = [i for i in data.images if str(i.path) in wanted]
    for path, reason in data.skipped:
        warnings.warn(f"{path}: skipped ({reason})", stacklevel=2)
    for path, reason in data.warnings:
        warnings.warn(f"{path}: {reason}", stacklevel=2)
    train, val = split_seg_data(data.images, config.val_fraction, config.seed)
    state = state_file(out)
    trained = train_network(train, val, config, state, device, progress, log_dir, workers)
    summary = {**data.summary(), "source": str(src), "format": format, "train_images": len(train), "val_images": len(val),
               "taxonomy": taxonomy.name, "config": config.to_dict(), "epochs_run": trained.epochs_run, "history": trained.history}
    bundle = save_proposer(out, trained.network, config.network, trained.post, config.tile, config.overlap, summary, trained.metrics,
                            config.input_scale)
    state.unlink(missing_ok=True)
    return TrainProposerResult(bundle, data.summary(), trained.metrics, trained.epochs_run, time.perf_counter() - started, data.skipped)
