"""A stacked ensemble: base learners' out-of-fold class probabilities -> a meta-learner.

Like scikit-learn's ``StackingClassifier`` (which this follows), with what the measurements on
defect crops asked for: base learners are class-balanced, the meta-learner is not (it learns the true
class frequencies, which keeps background false alarms down); the meta-learner sees the base
probabilities (or their logarithms) and optionally the leading ``passthrough`` columns of X (the
geometry block, see :mod:`defectkit.features`).

Why not ``sklearn.ensemble.StackingClassifier`` itself: its ``passthrough`` hands the meta-learner
all of X or none (here: the geometry block only, not hundreds of embedding columns), its folds do not
shrink when a class has fewer samples than folds (defect classes of 2-4 crops are common), and it has
no log-probability stacking. What it does validate, this does too: it passes scikit-learn's estimator
checks (``tests/test_ensemble.py``). With the same members and folds the two score the same on both
shared materials and this one fits faster (``benchmarks/stacking.py``, README).
"""

from __future__ import annotations

import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from numbers import Integral

from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from defectkit.ensemble.learners import default_estimators, default_final_estimator

STACK_METHODS = ("proba", "log_proba")


class StackedEnsemble(ClassifierMixin, BaseEstimator):
    """Stack of ``estimators`` (``[(name, estimator)]``, default XGBoost + kNN + logistic regression).

    Parameters
    ----------
    estimators: base learners; None for :func:`default_estimators`.
    final_estimator: meta-learner; None for a regularised logistic regression (not class-balanced).
    passthrough: how many leading columns of X the meta-learner also sees (0: none).
    stack_method: ``"proba"`` (default) or ``"log_proba"``: what of the base probabilities it sees.
    cv: folds for the out-of-fold probabilities (fewer when a class has fewer samples).
    random_state: seed for the folds and the default learners.
    n_jobs: jobs for the folds and the final fits, as in scikit-learn (None: one, or what an enclosing
        ``joblib.parallel_config`` says, e.g. :func:`defectkit.threads.parallel_folds`).
    """

    _parameter_constraints: dict = {
        "estimators": [list, None],
        "final_estimator": [HasMethods(["fit", "predict_proba"]), None],
        "passthrough": [Interval(Integral, 0, None, closed="left")],
        "stack_method": [StrOptions(set(STACK_METHODS))],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(self, estimators=None, final_estimator=None, passthrough: int = 0, stack_method: str = "proba", cv: int = 5,
                 random_state: int | None = 0, n_jobs: int | None = None):
        self.estimators = estimators
        self.final_estimator = final_estimator
        self.passthrough = passthrough
        self.stack_method = stack_method
        self.cv = cv
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _members(self) -> list[tuple[str, object]]:
        members = default_estimators(self.random_state) if self.estimators is None else list(self.estimators)
        if not members:
            raise ValueError("estimators: a stack needs at least one base learner")
        names = [name for name, _ in members]
        if len(set(names)) != len(names):
            raise ValueError(f"estimators: names must be unique, got {names}")
        for name, estimator in members:
            if not hasattr(estimator, "predict_proba"):
                raise ValueError(f"estimators: {name!r} ({type(estimator).__name__}) has no predict_proba")
        return members

    def fit(self, X, y, groups=None):
        """``groups`` (e.g. each crop's source image): the inner folds that make the meta-learner's
        training rows keep a group on one side, so no base learner has seen a sibling of a row it
        predicts."""
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if not 0 <= self.passthrough <= X.shape[1]:
            raise ValueError(f"passthrough must be between 0 and {X.shape[1]} (columns of X), got {self.passthrough}")
        self.classes_, encoded = np.unique(y, return_inverse=True)
        counts = np.bincount(encoded)
        if len(self.classes_) < 2:
            raise ValueError(f"a stack needs at least 2 classes, got 1 class: {list(self.classes_)}")
        if counts.min() < 2:
            rare = [str(c) for c, n in zip(self.classes_, counts) if n < 2]
            raise ValueError(f"class(es) {rare} have a single sample; every class needs at least 2")
        if groups is None:
            folds = StratifiedKFold(min(self.cv, int(counts.min())), shuffle=True, random_state=self.random_state)
        else:
            groups = np.asarray(groups)
            fewest = min(len(np.unique(groups[encoded == c])) for c in range(len(self.classes_)))
            folds = StratifiedGroupKFold(max(2, min(self.cv, fewest)), shuffle=True, random_state=self.random_state)
        members = self._members()
        jobs = getattr(self, "n_jobs", None)  # bundles saved before n_jobs existed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from a grouped fold: its column is 0 there
            out_of_fold = [cross_val_predict(clone(est), X, encoded, groups=groups, cv=folds, method="predict_proba", n_jobs=jobs)
                           for _, est in members]
        self.estimators_ = Parallel(n_jobs=jobs)(delayed(clone(est).fit)(X, encoded) for _, est in members)
        self.named_estimators_ = {name: est for (name, _), est in zip(members, self.estimators_)}
        final = default_final_estimator() if self.final_estimator is None else self.final_estimator
        self.final_estimator_ = clone(final).fit(self._stacked(out_of_fold, X), encoded)
        return self

    def _stacked(self, probabilities: list[np.ndarray], X: np.ndarray) -> np.ndarray:
        blocks = [np.log(np.clip(p, 1e-4, 1.0)) if self.stack_method == "log_proba" else p for p in probabilities]
        return np.hstack([*blocks, X[:, : self.passthrough]])

    def member_proba(self, X) -> dict[str, np.ndarray]:
        """Each base learner's class probabilities (columns in ``classes_`` order), by name."""
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return {name: est.predict_proba(X) for name, est in self.named_estimators_.items()}

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "final_estimator_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        probabilities = [est.predict_proba(X) for est in self.estimators_]
        return self.final_estimator_.predict_proba(self._stacked(probabilities, X))

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
