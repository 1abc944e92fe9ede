"""Two-level classification: the category (including background), then the subtype within it."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from numbers import Real

from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from defectkit.ensemble.stack import StackedEnsemble
from defectkit.taxonomy import UNCERTAIN



class Hierarchy(ClassifierMixin, BaseEstimator):
    """Level 1 predicts the category; level 2, one model per category with more than one subtype,
    predicts the subtype given the category. ``P(subtype) = P(category) * P(subtype | category)``.

    Fit on subtype labels; the taxonomy says which category each belongs to.

    Parameters
    ----------
    taxonomy: ``{category: [subtypes]}`` or a :class:`defectkit.taxonomy.Taxonomy`; None makes every
        label its own category (one level).
    estimator: the classifier cloned for every level (default :class:`StackedEnsemble`).
    rejection_threshold: where the predicted subtype's probability is below it, :meth:`decide`
        says ``"uncertain"``; None never rejects. ``predict`` always answers one of ``classes_``.

    The decision is top-down: the most probable category, then its most probable subtype; the
    confidence is the product of the two probabilities.
    """

    _parameter_constraints: dict = {
        "taxonomy": [dict, HasMethods(["resolve"]), None],  # {category: [subtypes]} or a Taxonomy
        "estimator": [HasMethods(["fit", "predict_proba"]), None],
        "rejection_threshold": [Interval(Real, 0, 1, closed="both"), None],
    }

    def __init__(self, taxonomy=None, estimator=None, rejection_threshold: float | None = None):
        self.taxonomy = taxonomy
        self.estimator = estimator
        self.rejection_threshold = rejection_threshold

    def _parents(self, labels) -> dict[str, str]:
        if self.taxonomy is None:
            return {str(label): str(label) for label in labels}
        categories = getattr(self.taxonomy, "categories", self.taxonomy)
        parents = {str(s): str(c) for c, subtypes in categories.items() for s in subtypes}
        unknown = sorted(set(map(str, labels)) - set(parents))
        if unknown:
            raise ValueError(f"label(s) {unknown} are not subtypes of the taxonomy (subtypes: {', '.join(sorted(parents))})")
        return parents

    def fit(self, X, y, groups=None):
        """``groups``: passed to each stack (see :meth:`StackedEnsemble.fit`)."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        groups = None if groups is None else np.asarray(groups)
        check_classification_targets(y)
        parents = self._parents(np.unique(y))
        categories = np.array([parents[str(s)] for s in y])
        estimator = StackedEnsemble() if self.estimator is None else self.estimator
        self.classes_ = np.unique(y)
        self.categories_ = np.unique(categories)
        self.parent_ = np.array([parents[str(s)] for s in self.classes_])
        def fitted(rows, labels):
            model = clone(estimator)
            return model.fit(X[rows], labels) if groups is None else model.fit(X[rows], labels, groups=groups[rows])

        self.level1_ = fitted(slice(None), categories) if len(self.categories_) > 1 else None
        self.level2_ = {}
        for category in self.categories_:
            inside = categories == category
            if len(np.unique(y[inside])) > 1:
                self.level2_[str(category)] = fitted(inside, y[inside])
        return self

    def predict_category_proba(self, X) -> np.ndarray:
        """P(category), columns in ``categories_`` order; rows sum to 1."""
        check_is_fitted(self, "categories_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.level1_ is None:
            return np.ones((len(X), 1))
        return _columns(self.level1_.predict_proba(X), self.level1_.classes_, self.categories_)

    def predict_conditional_proba(self, X) -> np.ndarray:
        """P(subtype | its category), columns in ``classes_`` order; each category's columns sum to 1."""
        check_is_fitted(self, "categories_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = np.zeros((len(X), len(self.classes_)))
        for category in self.categories_:
            columns = np.flatnonzero(self.parent_ == category)
            model = self.level2_.get(str(category))
            if model is None:
                out[:, columns] = 1.0
            else:
                out[:, columns] = _columns(model.predict_proba(X), model.classes_, self.classes_[columns])
        return out

    def predict_proba(self, X) -> np.ndarray:
        """P(subtype) = P(category) * P(subtype | category), columns in ``classes_`` order; rows sum to 1."""
        return self._joint(self.predict_category_proba(X), self.predict_conditional_proba(X))

    def _joint(self, category_proba: np.ndarray, conditional: np.ndarray) -> np.ndarray:
        return category_proba[:, np.searchsorted(self.categories_, self.parent_)] * conditional

    def _top_down(self, category_proba: np.ndarray, conditional: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the most probable category, and its most probable subtype (indices)."""
        best = np.argmax(category_proba, axis=1)
        within = np.where(self.parent_[None, :] == self.categories_[best][:, None], conditional, -1.0)
        return best, np.argmax(within, axis=1)

    def predict_category(self, X) -> np.ndarray:
        return self.categories_[np.argmax(self.predict_category_proba(X), axis=1)]

    def decide(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(category, subtype, confidence) per row, top-down; subtype is ``"uncertain"`` below the threshold."""
        return self.decide_with_proba(X)[:3]

    def decide_with_proba(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`decide` plus :meth:`predict_category_proba` and :meth:`predict_proba`, with every
        level's model run once."""
        category_proba = self.predict_category_proba(X)
        conditional = self.predict_conditional_proba(X)
        best, subtype = self._top_down(category_proba, conditional)
        confidence = category_proba[np.arange(len(best)), best] * conditional[np.arange(len(best)), subtype]
        labels = self.classes_[subtype]
        if self.rejection_threshold is not None:
            labels = labels.astype(object)
            labels[confidence < self.rejection_threshold] = UNCERTAIN
        return self.categories_[best], labels, confidence, category_proba, self._joint(category_proba, conditional)

    def predict(self, X) -> np.ndarray:
        """The top-down subtype (one of ``classes_``; see :meth:`decide` for rejection)."""
        category_proba = self.predict_category_proba(X)
        return self.classes_[self._top_down(category_proba, self.predict_conditional_proba(X))[1]]


def _columns(proba: np.ndarray, have, want) -> np.ndarray:
    """Reorder probability columns from the ``have`` labels to ``want`` (missing ones are 0)."""
    out = np.zeros((len(proba), len(want)))
    position = {str(label): i for i, label in enumerate(have)}
    for j, label in enumerate(want):
        if str(label) in position:
            out[:, j] = proba[:, position[str(label)]]
    return out
