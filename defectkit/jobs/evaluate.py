"""Evaluation: a trained bundle on a held-out crop data set, or K-fold CV grouped by source image."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from defectkit.classifier import ClassifierConfig, decide, fit_model, split_head
from defectkit.errors import DefectkitError
from defectkit.features import FeatureSpec, build_features
from defectkit.labelled import LabelledCrops, check_trainable, load_labelled
from defectkit.metrics import report
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.threads import parallel_folds

MEMBERS = ("xgb", "knn", "logreg")
BASELINES = (*MEMBERS, "flat stack", "hierarchy")


@dataclass
class CVResult:
    k: int
    folds: list[tuple[np.ndarray, np.ndarray]]
    reports: dict[str, dict]  # model name -> report over all out-of-fold predictions
    per_fold: dict[str, list[float]] = field(default_factory=dict)  # model name -> subtype macro-F1 per fold
    predicted: np.ndarray | None = None  # the model's out-of-fold subtype per crop
    confidence: np.ndarray | None = None  # and its confidence
    background: np.ndarray | None = None  # and its P(background)
    crops: LabelledCrops | None = None  # the crops (set by evaluate_cv, for per-crop rows)

    def to_dict(self, main: str = "hierarchy") -> dict:
        out = dict(self.reports[main])
        out["cv"] = {"k": self.k, "grouped_by": "source image", "subtype_macro_f1_per_fold": self.per_fold[main]}
        if self.crops is not None and self.predicted is not None:
            out["predictions"] = per_crop(self.crops, self.predicted, self.confidence)
        others = {name: {**r, "subtype_macro_f1_per_fold": self.per_fold[name]} for name, r in self.reports.items() if name != main}
        if others:
            out["baselines"] = others
        return out


def grouped_folds(subtypes: np.ndarray, groups: np.ndarray, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified folds with no source image in both parts of a fold.

    Falls back to fewer folds (with a warning) when a subtype comes from fewer than K images or a
    training part would hold fewer than 2 crops of a subtype; fails when not even 2 folds work.
    """
    if k < 2:
        raise DefectkitError(f"cross-validation needs at least 2 folds, got --cv {k}")
    images = {str(s): len(np.unique(groups[subtypes == s])) for s in np.unique(subtypes)}
    rarest = min(images, key=images.get)
    if images[rarest] < 2:
        raise DefectkitError(
            f"subtype {rarest!r} has crops from a single source image: grouped cross-validation needs at "
            "least 2 images per subtype; add data or leave that subtype out"
        )
    for folds_now in range(min(k, images[rarest]), 1, -1):
        splitter = StratifiedGroupKFold(folds_now, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # scikit-learn's own note on small classes
            folds = list(splitter.split(np.zeros(len(subtypes)), subtypes, groups))
        if all(min(np.unique(subtypes[train], return_counts=True)[1]) >= 2 and len(np.unique(subtypes[train])) == len(images) for train, _ in folds):
            break
    else:
        raise DefectkitError(f"subtype {rarest!r} has too few crops ({images[rarest]} images) for even 2 grouped folds")
    if folds_now < k:
        warnings.warn(
            f"using {folds_now} folds instead of {k}: subtype {rarest!r} has crops from only {images[rarest]} "
            "source images, and no image may sit in both the training and the test part of a fold",
            stacklevel=2,
        )
    for train, test in folds:
        if set(groups[train]) & set(groups[test]):  # StratifiedGroupKFold guarantees this; we check anyway
            raise RuntimeError("a source image appears in both parts of a fold")
    return folds


def cross_validate(
    X: np.ndarray,
    crops: LabelledCrops,
    taxonomy: Taxonomy,
    config: ClassifierConfig,
    spec: FeatureSpec,
    k: int = 5,
    baselines: bool = False,
    progress: bool = True,
    on_fold: Callable[[int, list[float]], None] | None = None,
) -> CVResult:
    """Out-of-fold predictions of the hierarchy (and, with ``baselines``, of each base learner alone
    and of the flat one-level stack, all on the same folds) and their reports. ``on_fold(i, scores)``
    is called after each fold with the model's defect macro-F1 of the folds so far (it may raise to
    stop, as a pruned tuning trial does)."""
    check_trainable(crops)
    y = crops.subtypes
    folds = grouped_folds(y, crops.groups, k, config.seed)
    names = BASELINES if baselines else ("hierarchy",)
    subtype = {name: np.empty(len(y), dtype=object) for name in names}
    category = np.empty(len(y), dtype=object)
    confidence, background = np.zeros(len(y)), np.zeros(len(y))
    per_fold = {name: [] for name in names}
    for train, test in tqdm(folds, desc=f"{len(folds)}-fold CV", unit="fold", disable=not progress):
        model = fit_model(config.model(taxonomy, spec), X[train], y[train], crops.groups[train], config)
        decision = decide(model, X[test])
        category[test], subtype["hierarchy"][test], confidence[test] = decision.category, decision.subtype, decision.confidence
        background[test] = decision.background
        if baselines:
            flat = fit_model(config.model(taxonomy, spec, flat=True), X[train], y[train], crops.groups[train], config)
            subtype["flat stack"][test] = flat.predict(X[test])
            stack, Xt = split_head(flat, X[test])
            for name, proba in stack.member_proba(Xt).items():
                subtype[name][test] = stack.classes_[np.argmax(proba, axis=1)]
        for name in names:
            per_fold[name].append(_defect_macro_f1(y[test], subtype[name][test].astype(str)))
        if on_fold is not None:
            on_fold(len(per_fold["hierarchy"]) - 1, per_fold["hierarchy"])
    reports = {name: report(taxonomy, y, subtype[name], category if name == "hierarchy" else None,
                            confidence if name == "hierarchy" else None) for name in names}
    return CVResult(len(folds), folds, reports, per_fold, subtype["hierarchy"].astype(str), confidence, background)


def _defect_macro_f1(true: np.ndarray, predicted: np.ndarray) -> float:
    labels = [s for s in np.unique(true) if s != BACKGROUND]
    return round(float(f1_score(true, predicted, labels=labels, average="macro", zero_division=0)), 4)


def evaluate_cv(
    dataset: str | Path,
    taxonomy: Taxonomy,
    config: ClassifierConfig = ClassifierConfig(),
    k: int = 5,
    baselines: bool = False,
    cache=None,
    progress: bool = True,
    embed_on=None,
) -> CVResult:
    """``defectkit evaluate DATASET --taxonomy FILE --cv K``: features once, then grouped K-fold CV.
    ``embed_on``: as :func:`defectkit.jobs.train.train`'s."""
    crops = load_labelled(dataset, taxonomy)
    check_trainable(crops)
    spec = config.feature_spec()
    X = build_features(crops.records, spec, config.embedder(), cache, progress, embed_on)
    with parallel_folds():
        result = cross_validate(X, crops, taxonomy, config, spec, k, baselines, progress)
    result.crops = crops
    return result


def evaluate_bundle(dataset: str | Path, model_dir: str | Path, cache=None, progress: bool = True, device: str | None = None,
                    embed_on=None) -> dict:
    """``defectkit evaluate DATASET --model DIR``: a trained bundle on a held-out crop data set."""
    from defectkit.bundle import load_bundle

    bundle = load_bundle(model_dir)
    bundle.embedder(device)
    crops = load_labelled(dataset, bundle.taxonomy)
    X = bundle.features(crops.records, cache, progress, embed_on)
    category, subtype, confidence, *_ = decide(bundle.model, X)
    out = report(bundle.taxonomy, crops.subtypes, subtype, category, confidence)
    out["model"] = str(model_dir)
    out["predictions"] = per_crop(crops, subtype, confidence)
    return out


def per_crop(crops: LabelledCrops, predicted, confidence) -> list[dict]:
    """One row per crop: where it is, what it is, what the model said and how sure it was."""
    return [{"crop": r.get("crop_path"), "image": r.get("image"), "true": str(t), "predicted": str(p), "confidence": round(float(c), 4)}
            for r, t, p, c in zip(crops.records, crops.subtypes, predicted, confidence)]
