"""Our StackedEnsemble against scikit-learn's StackingClassifier, with the same members and
meta-learner, on the same grouped folds: is the hand-written stack worth keeping?

One flat stack over all subtypes each (no hierarchy), after the same embedding PCA, on the crops that
benchmarks/classifier_materials.py extracts (kept in its --work folder), features geometry + texture
+ embedding. K-fold CV grouped by source image, several fold seeds; printed: defect-subtype
macro-F1, mean and spread over the seeds, and the mean paired difference.

    .venv/bin/python benchmarks/stacking.py [--dataset cr7-det] [--images 600] [--seeds 5] [--cv 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import StackingClassifier
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline

from defectkit.classifier import ClassifierConfig
from defectkit.embed import EmbeddingCache
from defectkit.ensemble import default_estimators, default_final_estimator
from defectkit.features import EmbeddingPCA, build_features
from defectkit.jobs.evaluate import grouped_folds
from defectkit.labelled import load_labelled
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.threads import parallel_folds, use_one_thread

from classifier_materials import DATASETS, crops_of  # noqa: E402 (a sibling benchmark)


def sklearn_stack(config: ClassifierConfig, spec) -> Pipeline:
    """The flat model ``config.model(flat=True)`` builds, with scikit-learn's stack in place of ours."""
    stack = StackingClassifier(default_estimators(config.seed), final_estimator=default_final_estimator(), cv=5,
                               stack_method="predict_proba", n_jobs=None)
    return Pipeline([("reduce", EmbeddingPCA(start=spec.n_tabular, n_components=config.pca, random_state=config.seed)),
                     ("classify", stack)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="cr7-det")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/materials"))
    args = parser.parse_args()
    use_one_thread()
    taxonomy = Taxonomy.load(DATASETS[args.dataset][2])
    crops = load_labelled(crops_of(args.dataset, args.work, args.images or None), taxonomy)
    base = ClassifierConfig(texture=True)
    spec = base.feature_spec()
    X = build_features(crops.records, spec, base.embedder(), EmbeddingCache(), progress=False)
    y = crops.subtypes
    defects = sorted({s for s in y if s != BACKGROUND})
    models = {"defectkit StackedEnsemble": lambda c: c.model(taxonomy, spec, flat=True), "sklearn StackingClassifier": lambda c: sklearn_stack(c, spec)}
    scores = {name: [] for name in models}
    for seed in range(args.seeds):
        config = ClassifierConfig(texture=True, seed=seed)
        folds = grouped_folds(y, crops.groups, args.cv, seed)
        for name, build in models.items():
            predicted, start = np.empty(len(y), dtype=object), time.perf_counter()
            with parallel_folds():
                for train, test in folds:
                    predicted[test] = build(config).fit(X[train], y[train]).predict(X[test])
            scores[name].append(f1_score(y, predicted, labels=defects, average="macro", zero_division=0))
            print(f"seed {seed}: {name}: defect macro-F1 {scores[name][-1]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\n{args.dataset}: {len(y)} crops, {args.cv}-fold CV grouped by source image, fold seeds 0..{args.seeds - 1}, one flat stack each")
    for name, values in scores.items():
        print(f"{name:<28} {np.mean(values):.3f} +- {np.std(values):.3f}")
    diff = np.subtract(*scores.values())
    print(f"{'paired difference':<28} {np.mean(diff):+.3f} +- {np.std(diff):.3f} (ours minus scikit-learn's)")


if __name__ == "__main__":
    main()
