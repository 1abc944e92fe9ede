"""The figures a classifier is judged by, at both levels, in the report's JSON form."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from defectkit.ensemble.hierarchy import UNCERTAIN
from defectkit.taxonomy import BACKGROUND, Taxonomy


def category_of(taxonomy: Taxonomy, subtypes) -> np.ndarray:
    return np.array([taxonomy.category_of(str(s), default=UNCERTAIN) for s in subtypes], dtype=object)


def calibration(correct: np.ndarray, confidence: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error: the gap between confidence and accuracy, averaged over equal-width
    confidence bins weighted by their size; with the bins (mean confidence, accuracy, count) for a
    reliability plot."""
    correct, confidence = np.asarray(correct, dtype=float), np.asarray(confidence, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap = abs(confidence[inside].mean() - correct[inside].mean())
            ece += gap * inside.sum() / len(confidence)
            rows.append([_round(confidence[inside].mean()), _round(correct[inside].mean()), int(inside.sum())])
    return {"ece": _round(ece), "bins": rows}


def precision_thresholds(true, predicted, confidence, target: float, min_support: int = 5,
                         background: bool = False) -> dict[str, float | None]:
    """Per predicted subtype (background aside, unless ``background``), the lowest confidence at or
    above which its predictions reach ``target`` precision: below it a defect is better called
    uncertain. 0.0 where every prediction already does; None where no threshold reaches it, or fewer
    than ``min_support`` crops were predicted as it (too few to say)."""
    true, predicted, confidence = (np.asarray(a) for a in (true, predicted, confidence))
    out: dict[str, float | None] = {}
    for subtype in sorted(set(predicted.astype(str)) - {UNCERTAIN} - (set() if background else {BACKGROUND})):
        mine = predicted == subtype
        if mine.sum() < min_support:
            out[subtype] = None
            continue
        order = np.argsort(-confidence[mine])
        right = (true[mine] == subtype)[order]
        precision = np.cumsum(right) / np.arange(1, len(right) + 1)  # of the k most confident
        reaching = np.nonzero(precision >= target)[0]
        if not len(reaching):
            out[subtype] = None
        elif reaching[-1] == len(right) - 1:
            out[subtype] = 0.0
        else:
            out[subtype] = _round(confidence[mine][order][reaching[-1]])
    return out


def false_alarm_threshold(p_defect, called_defect, false_alarm, matched, per_clean_image: float, target: float) -> dict:
    """The lowest threshold on P(not background) that keeps a proposer's false alarms at or under
    ``target`` per defect-free image, chosen on out-of-fold predictions. ``false_alarm`` marks the
    proposer's regions that touch no defect (background crops), ``matched`` its regions that match
    one, ``called_defect`` the rows the model called a defect; ``per_clean_image`` is how many
    regions the proposer finds on a defect-free image. The false defects per defect-free image are
    estimated as the share of false alarms still called a defect times ``per_clean_image``: every
    false alarm informs the share, not only those of the (often few) defect-free images.

    Returns the threshold (0.0 where none is needed), the estimated false defects per defect-free
    image before and after it, and the share of matched regions called a defect before and after."""
    p_defect, called, false_alarm, matched = (np.asarray(a) for a in (p_defect, called_defect, false_alarm, matched))
    per_alarm = per_clean_image / max(int(false_alarm.sum()), 1)  # false defects per clean image that one false alarm stands for
    allowed = int(np.floor(target / per_alarm + 1e-9)) if per_alarm else len(p_defect)
    scores = np.sort(p_defect[called & false_alarm])[::-1]  # the false alarms called defects, most confident first
    # just above the first one past the allowance, to 4 decimals (rounded up)
    threshold = 0.0 if len(scores) <= allowed else float(np.ceil(scores[allowed] * 1e4 + 1e-6) / 1e4)

    def kept(rows, at):
        return called & rows & (p_defect >= at)

    def share(rows, at):
        return _round(kept(rows, at).sum() / rows.sum()) if rows.sum() else None

    return {"threshold": _round(threshold), "target_false_alarms_per_image": target,
            "proposals_per_clean_image": _round(per_clean_image),
            "false_alarms_per_image": [_round(kept(false_alarm, 0.0).sum() * per_alarm), _round(kept(false_alarm, threshold).sum() * per_alarm)],
            "matched_called_defect": [share(matched, 0.0), share(matched, threshold)]}


def report(taxonomy: Taxonomy, true_subtypes, predicted_subtypes, predicted_categories=None, confidence=None) -> dict:
    """Accuracy and macro-F1 per level, per-subtype precision/recall/F1, detection rates, confusions.

    ``subtype.macro_f1`` averages the defect subtypes only (background excluded, as in the project's
    targets); ``subtype.macro_f1_all`` includes background. ``category.macro_f1`` averages all
    categories, background included. A prediction of ``uncertain`` counts as wrong. With
    ``confidence`` (the subtype's probability), ``calibration`` holds the expected calibration error.
    """
    true_sub = np.asarray(true_subtypes, dtype=object).astype(str)
    pred_sub = np.asarray(predicted_subtypes, dtype=object).astype(str)
    true_cat = category_of(taxonomy, true_sub).astype(str)
    pred_cat = (category_of(taxonomy, pred_sub) if predicted_categories is None else np.asarray(predicted_categories, dtype=object)).astype(str)
    subtypes = [s for s in taxonomy.subtypes if s in set(true_sub)]
    defects = [s for s in subtypes if s != BACKGROUND]
    categories = [c for c in taxonomy.categories if c in set(true_cat)]
    precision, recall, f1, support = precision_recall_fscore_support(true_sub, pred_sub, labels=subtypes, zero_division=0)
    is_defect = true_cat != BACKGROUND
    called_defect = (pred_cat != BACKGROUND) & (pred_cat != UNCERTAIN)
    out = {
        "n": int(len(true_sub)),
        "category": {
            "accuracy": _round(accuracy_score(true_cat, pred_cat)),
            "macro_f1": _round(f1_score(true_cat, pred_cat, labels=categories, average="macro", zero_division=0)),
        },
        "subtype": {
            "accuracy": _round(accuracy_score(true_sub, pred_sub)),
            "macro_f1": _round(f1_score(true_sub, pred_sub, labels=defects or subtypes, average="macro", zero_division=0)),
            "macro_f1_all": _round(f1_score(true_sub, pred_sub, labels=subtypes, average="macro", zero_division=0)),
            "per_class": {
                s: {"precision": _round(p), "recall": _round(r), "f1": _round(f), "support": int(n)}
                for s, p, r, f, n in zip(subtypes, precision, recall, f1, support)
            },
        },
        "detection": {
            "defect_recall": _round(called_defect[is_defect].mean()) if is_defect.any() else None,
            "background_false_alarm": _round(called_defect[~is_defect].mean()) if (~is_defect).any() else None,
        },
        "uncertain": int((pred_sub == UNCERTAIN).sum()),
        "confusion": {
            "rows": "true", "columns": "predicted",
            "category": _confusion(true_cat, pred_cat, categories),
            "subtype": _confusion(true_sub, pred_sub, subtypes),
        },
    }
    if confidence is not None:
        out["calibration"] = calibration(true_sub == pred_sub, confidence)
    return out


def _confusion(true, predicted, labels: list[str]) -> dict:
    columns = labels + sorted(set(predicted) - set(labels))  # 'uncertain' (or an unseen class) last
    matrix = confusion_matrix(true, predicted, labels=columns)[: len(labels)]
    return {"labels": labels, "predicted_labels": columns, "matrix": matrix.tolist()}


def _round(value) -> float:
    return round(float(value), 4)
