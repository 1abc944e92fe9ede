"""Classification: a stacked ensemble (XGBoost + kNN + logistic regression) and the two-level hierarchy."""

from defectkit.ensemble.hierarchy import UNCERTAIN, Hierarchy
from defectkit.ensemble.learners import BalancedXGBClassifier, default_estimators, default_final_estimator
from defectkit.ensemble.stack import StackedEnsemble

__all__ = [
    "UNCERTAIN",
    "BalancedXGBClassifier",
    "Hierarchy",
    "StackedEnsemble",
    "default_estimators",
    "default_final_estimator",
]
