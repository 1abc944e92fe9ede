"""``defectkit train``: labelled crops in, a cross-validated and saved model bundle out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from defectkit.bundle import save_bundle
from defectkit.classifier import ClassifierConfig, fit_model
from defectkit.data.manifest import crop_settings, negatives_settings
from defectkit.jobs.evaluate import CVResult, cross_validate
from defectkit.features import build_features
from defectkit.errors import DefectkitError
from defectkit.labelled import check_trainable, load_labelled
from defectkit.metrics import precision_thresholds
from defectkit.taxonomy import Taxonomy
from defectkit.threads import parallel_folds
from defectkit.timing import Timings, stage


@dataclass
class TrainResult:
    bundle: Path
    model: object  # the fitted model, as saved
    summary: dict
    cv: CVResult | None
    seconds: float


def train(
    dataset: str | Path,
    taxonomy: Taxonomy,
    out: str | Path,
    config: ClassifierConfig = ClassifierConfig(),
    cv: int = 5,
    cache=None,
    progress: bool = True,
    timings: Timings | None = None,
    jobs: int | None = None,
    proposer: str | Path | None = None,
    record: dict | None = None,
    target_precision: float | None = None,
) -> TrainResult:
    """Embed the crops, estimate quality by grouped ``cv``-fold CV (0: skip), fit on all crops, save.
    ``timings`` adds the seconds of ``features`` (backbone built, crops embedded or taken from the
    cache), ``cv``, ``fit`` and ``save``. ``jobs`` threads fit the stacks' folds (None: one per CPU).
    ``proposer``: a proposer bundle (``train-proposer``) that the model carries and ``classify`` uses.
    ``record``: more to keep in the bundle's training summary (``tune`` keeps its study there).
    ``target_precision``: per subtype, the confidence below which a defect is reported ``uncertain``
    is chosen on the CV's out-of-fold predictions so that the rest reach this precision (needs ``cv``)."""
    if target_precision is not None and not (cv and 0 < target_precision < 1):
        raise DefectkitError(f"--target-precision needs --cv K and a value between 0 and 1, got {target_precision} with --cv {cv}")
    start = time.perf_counter()
    with stage(timings, "features"):
        crops = load_labelled(dataset, taxonomy)
        check_trainable(crops)
        spec = config.feature_spec()
        embedder = config.embedder()
        X = build_features(crops.records, spec, embedder, cache, progress)
    with parallel_folds(jobs):
        with stage(timings, "cv"):
            result = cross_validate(X, crops, taxonomy, config, spec, cv, progress=progress) if cv else None
        with stage(timings, "fit"):
            model = fit_model(config.model(taxonomy, spec), X, crops.subtypes, crops.groups, config)
    summary = {**crops.summary(), "config": config.to_dict(), "crop": crop_settings(dataset),
               "negatives_from": negatives_settings(dataset), **(record or {})}
    metrics = result.to_dict() if result else {}
    metrics.pop("confusion", None)
    thresholds = None
    if target_precision is not None:
        per_class = precision_thresholds(crops.subtypes, result.predicted, result.confidence, target_precision)
        thresholds = {"target_precision": target_precision, "chosen_on": f"{result.k}-fold grouped CV", "per_class": per_class}
    with stage(timings, "save"):
        bundle = save_bundle(out, model, taxonomy, spec, embedder, training=summary, metrics=metrics, proposer=proposer,
                             thresholds=thresholds)
    return TrainResult(bundle, model, summary, result, time.perf_counter() - start)
