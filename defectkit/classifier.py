"""What defines a classifier before it is trained: backbone, features, ensemble; and the builders.

The model is a scikit-learn Pipeline: PCA on the embedding columns (fitted on training data only),
then the two-level :class:`~defectkit.ensemble.Hierarchy` of :class:`~defectkit.ensemble.StackedEnsemble`
(or, for comparison, one flat stack over all subtypes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.pipeline import Pipeline

from defectkit.ensemble import Hierarchy, StackedEnsemble, default_estimators, default_final_estimator
from defectkit.features import EmbeddingPCA, FeatureSpec
from defectkit.taxonomy import BACKGROUND, Taxonomy


@dataclass(frozen=True)
class ClassifierConfig:
    """Choices for training; every one has a default that works on a 2-core CPU.

    backbone / weights / image_size / mask_mode: see :class:`defectkit.embed.Embedder` (None: the
    defaults, or what the weights file's JSON says). texture: add LBP/GLCM/HOG features. pca: embedding
    components kept (None or 0: the whole embedding). passthrough_geometry: the meta-learner also sees
    the geometry features. rejection_threshold: below it a defect is ``uncertain``. flat: one stack
    over all subtypes instead of the two-level hierarchy. learner_params: ``(key, value)`` pairs set
    on the stack's learners by scikit-learn's ``set_params`` naming, the learner's name first
    (``("xgb__max_depth", 6)``, ``("knn__knn__n_neighbors", 5)``; ``final__...`` is the meta-learner).
    """

    backbone: str | None = None
    weights: str | None = "default"
    image_size: int | None = None
    mask_mode: str | None = None
    embedding: bool = True
    texture: bool = False
    pca: int | None = 32
    passthrough_geometry: bool = False
    rejection_threshold: float | None = None
    flat: bool = False
    grouped_stack: bool = False  # the stack's inner folds grouped by source image (see fit_model)
    learner_params: tuple[tuple[str, float | int | str], ...] = ()
    seed: int = 0
    device: str | None = None  # where the backbone embeds (default CUDA when present); not part of the model

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("device")
        data["weights"] = str(self.weights) if self.weights is not None else None
        return data

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(texture=self.texture, embedding=self.embedding)

    def embedder(self, progress: bool = False):
        if not self.embedding:
            return None
        from defectkit.embed import Embedder

        weights = Path(self.weights) if self.weights not in (None, "default", "random", "hub") else self.weights
        return Embedder(self.backbone, weights, self.image_size, self.mask_mode, device=self.device, seed=self.seed)

    def stack(self, spec: FeatureSpec, estimators=None) -> StackedEnsemble:
        members = default_estimators(self.seed) if estimators is None else estimators
        final = default_final_estimator()
        for key, value in self.learner_params:
            name, _, param = key.partition("__")
            learner = final if name == "final" else dict(members).get(name)
            if learner is None or not param:
                raise ValueError(f"learner parameter {key!r}: no learner {name!r} (learners: {', '.join(n for n, _ in members)}, final)")
            learner.set_params(**{param: value})
        return StackedEnsemble(
            estimators=members,
            final_estimator=final if any(key.startswith("final__") for key, _ in self.learner_params) else None,
            passthrough=len(spec.geometry) if self.passthrough_geometry else 0,
            random_state=self.seed,
        )

    def model(self, taxonomy: Taxonomy, spec: FeatureSpec, flat: bool = False) -> Pipeline:
        """The unfitted model: hierarchy of stacks (or one flat stack), after embedding PCA."""
        head = self.stack(spec) if flat or self.flat else Hierarchy(
            taxonomy={c: list(s) for c, s in taxonomy.categories.items()},
            estimator=self.stack(spec),
            rejection_threshold=self.rejection_threshold,
        )
        steps = []
        if spec.embedding and self.pca:
            steps.append(("reduce", EmbeddingPCA(start=spec.n_tabular, n_components=self.pca, random_state=self.seed)))
        steps.append(("classify", head))
        return Pipeline(steps)


def fit_model(model: Pipeline, X, y, groups, config: ClassifierConfig) -> Pipeline:
    """Fit; with ``config.grouped_stack`` the stacks' inner folds keep each source image on one side."""
    return model.fit(X, y, classify__groups=groups) if config.grouped_stack else model.fit(X, y)


def split_head(model: Pipeline, X):
    """The model's last step and X transformed by the steps before it."""
    return model[-1], (model[:-1].transform(X) if len(model) > 1 else X)


class Decision(NamedTuple):
    """The classifier's answer for rows of X; a flat stack has no category level (None)."""

    category: np.ndarray | None
    subtype: np.ndarray
    confidence: np.ndarray
    category_proba: np.ndarray | None  # columns: the hierarchy's categories_
    subtype_proba: np.ndarray  # columns: classes_
    background: np.ndarray  # P(background) per row (0 where the model knows no background)


def decide(model: Pipeline, X) -> Decision:
    head, Xt = split_head(model, X)
    if isinstance(head, Hierarchy):
        category, subtype, confidence, category_proba, proba = head.decide_with_proba(Xt)
    else:
        proba = head.predict_proba(Xt)
        category, subtype, confidence, category_proba = None, head.classes_[proba.argmax(axis=1)], proba.max(axis=1), None
    column = np.flatnonzero(np.asarray(head.classes_).astype(str) == BACKGROUND)
    background = proba[:, column[0]] if len(column) else np.zeros(len(proba))
    return Decision(category, subtype, confidence, category_proba, proba, background)
