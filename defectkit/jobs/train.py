"""``defectkit train``: labelled crops in, a cross-validated and saved model bundle out."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from defectkit.bundle import save_bundle
from defectkit.classifier import ClassifierConfig, fit_model
from defectkit.data.manifest import crop_settings, negatives_settings
from defectkit.jobs.evaluate import CVResult, cross_validate
from defectkit.features import FeatureSpec, build_features, feature_columns
from defectkit.errors import DefectkitError
from defectkit.labelled import check_trainable, load_labelled
from defectkit.metrics import false_alarm_threshold, precision_thresholds
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.threads import parallel_folds
from defectkit.timing import Timings, stage


@dataclass
class TrainResult:
    bundle: Path
    model: object  # the fitted model, as saved
    summary: dict
    cv: CVResult | None
    seconds: float
    thresholds: dict | None = None  # as the bundle keeps them (train's --target-precision and --max-false-alarms)


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
    max_false_alarms: float | None = 0.05,
    choose_features: bool = False,
    embed_on=None,
) -> TrainResult:
    """Embed the crops, estimate quality by grouped ``cv``-fold CV (0: skip), fit on all crops, save.
    ``timings`` adds the seconds of ``features`` (backbone built, crops embedded or taken from the
    cache), ``cv``, ``fit`` and ``save``. ``jobs`` threads fit the stacks' folds (None: one per CPU).
    ``proposer``: a proposer bundle (``train-proposer``) that the model carries and ``classify`` uses.
    ``record``: more to keep in the bundle's training summary (``tune`` keeps its study there).
    ``target_precision``: per subtype, the confidence below which a defect is reported ``uncertain``
    is chosen on the CV's out-of-fold predictions so that the rest reach this precision (needs ``cv``).
    ``max_false_alarms``: where the crops hold the proposer's hard negatives, the threshold on
    P(not background) under which ``classify`` drops a region is chosen on the CV's out-of-fold
    predictions so that its false alarms leave at most this many false defects per defect-free image
    (None: no threshold; without ``cv`` or hard negatives there is none).
    ``choose_features``: the grouped CV scores each of :func:`feature_choices` (texture and embedding
    each on or off; with ``config.embedding`` off, texture only) and the best (defect-subtype
    macro-F1) is trained; the bundle records every score (without ``cv``, the config as given).
    ``embed_on``: wraps the embedder to embed the crops elsewhere (``distributed.RayEmbedder``)."""
    if target_precision is not None and not (cv and 0 < target_precision < 1):
        raise DefectkitError(f"--target-precision needs --cv K and a value between 0 and 1, got {target_precision} with --cv {cv}")
    start = time.perf_counter()
    choice = None
    choose_features = choose_features and bool(cv)
    if choose_features:
        config = replace(config, texture=True)  # built with every block that may be chosen
    with stage(timings, "features"):
        crops = load_labelled(dataset, taxonomy)
        check_trainable(crops)
        spec = config.feature_spec()
        embedder = config.embedder()
        X = build_features(crops.records, spec, embedder, cache, progress, embed_on)
    with parallel_folds(jobs):
        with stage(timings, "cv"):
            if choose_features:
                config, spec, X, result, choice = _choose_features(X, spec, embedder, crops, taxonomy, config, cv, progress)
                embedder = embedder if config.embedding else None
            else:
                result = cross_validate(X, crops, taxonomy, config, spec, cv, progress=progress) if cv else None
        with stage(timings, "fit"):
            model = fit_model(config.model(taxonomy, spec), X, crops.subtypes, crops.groups, config)
    summary = {**crops.summary(), "config": config.to_dict(), "crop": crop_settings(dataset),
               "negatives_from": negatives_settings(dataset), **({"feature_choice": choice} if choice else {}), **(record or {})}
    metrics = result.to_dict() if result else {}
    metrics.pop("confusion", None)
    thresholds = {}
    if target_precision is not None:
        per_class = precision_thresholds(crops.subtypes, result.predicted, result.confidence, target_precision)
        thresholds = {"target_precision": target_precision, "chosen_on": f"{result.k}-fold grouped CV", "per_class": per_class}
    defect = defect_threshold(crops, result, max_false_alarms) if result and max_false_alarms is not None else None
    if defect:
        thresholds["defect"] = {**defect, "chosen_on": f"{result.k}-fold grouped CV"}
    with stage(timings, "save"):
        bundle = save_bundle(out, model, taxonomy, spec, embedder, training=summary, metrics=metrics, proposer=proposer,
                             thresholds=thresholds or None)
    return TrainResult(bundle, model, summary, result, time.perf_counter() - start, thresholds or None)


def defect_threshold(crops, result: CVResult, target: float) -> dict | None:
    """The threshold on P(not background) that keeps the proposer's out-of-fold false alarms (its
    hard negatives, ``origin: negative``) at or under ``target`` per defect-free image (see
    :func:`false_alarm_threshold`); None where the crops hold no hard negatives."""
    origin = np.array([str(r.get("origin", "")) for r in crops.records])
    negative = origin == "negative"
    if not negative.any():
        return None
    defective = set(crops.groups[crops.subtypes != BACKGROUND].tolist())
    clean = [g for g in np.unique(crops.groups) if g not in defective]
    # the proposer's regions per defect-free image; where none was labelled, per image
    per_clean_image = (np.isin(crops.groups[negative], clean).sum() / len(clean) if clean
                       else negative.sum() / len(np.unique(crops.groups)))
    return false_alarm_threshold(1.0 - result.background, result.predicted != BACKGROUND, negative, origin == "proposal",
                                 per_clean_image, target)


def feature_choices(embedding: bool) -> dict[str, dict]:
    """The feature sets ``train`` chooses between, cheapest to compute first (ties go to it)."""
    if not embedding:
        return {"geometry": dict(texture=False), "geometry+texture": dict(texture=True)}
    return {"geometry+texture": dict(texture=True, embedding=False), "geometry+embedding": dict(texture=False, embedding=True),
            "geometry+texture+embedding": dict(texture=True, embedding=True)}


def _choose_features(X, spec: FeatureSpec, embedder, crops, taxonomy: Taxonomy, config: ClassifierConfig, cv: int, progress: bool):
    """Grouped CV for each feature set (``X`` holds every block); the best, by mean defect-subtype
    macro-F1 over the folds."""
    start = time.perf_counter()
    tried = {}
    for name, blocks in feature_choices(config.embedding).items():
        option = replace(config, **blocks)
        columns = feature_columns(X, spec, option.feature_spec(), embedder.dim if embedder else 0)
        result = cross_validate(columns, crops, taxonomy, option, option.feature_spec(), cv, progress=progress)
        tried[name] = (option, columns, result, float(np.mean(result.per_fold["hierarchy"])))
    best = max(tried, key=lambda name: tried[name][3])  # the first of equals: the cheapest
    option, columns, result, _ = tried[best]
    choice = {"chosen": best, "cv_macro_f1": {name: round(t[3], 4) for name, t in tried.items()}, "folds": result.k,
              "seconds": round(time.perf_counter() - start, 1)}
    return option, option.feature_spec(), columns, result, choice
