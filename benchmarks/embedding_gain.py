"""Does the backbone's embedding earn its place? Its gain over geometry + texture, on both materials.

For each data set (crops extracted once with extract's defaults, as in classifier_materials.py) and
each backbone (``shipped``: checkpoints/defectkit-backbone.safetensors; ``random``: random weights;
or a weights file from ``defectkit pretrain``), with K-fold CV grouped by source image for each fold
seed:

- the default hierarchy on geometry + texture, and on geometry + texture + embedding (same folds);
- the paired gain of the embedding per fold seed: mean, spread, and a 95 % t-interval over the seeds;
- two cheap probes on the L2-normalised embedding alone, same folds: kNN (k = 5, cosine) and
  logistic regression;

all as defect-subtype macro-F1 (background is a class, left out of the average). The time a backbone
took to pretrain is printed where its JSON records it.

    .venv/bin/python benchmarks/embedding_gain.py [--dataset magnetic-tile --dataset cr7-det]
        [--backbone shipped --backbone random --backbone FILE ...] [--seeds 5] [--cv 5] [--cr7-images 600]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize

from classifier_materials import DATASETS, crops_of

from defectkit.classifier import ClassifierConfig
from defectkit.embed import EmbeddingCache
from defectkit.features import build_features
from defectkit.jobs.evaluate import cross_validate, grouped_folds
from defectkit.labelled import load_labelled
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.threads import parallel_folds, use_one_thread

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints" / "defectkit-backbone.safetensors"


def backbone_config(name: str) -> ClassifierConfig:
    weights = {"shipped": "default", "random": "random"}.get(name, name)
    return ClassifierConfig(texture=True, weights=weights)


def pretrain_minutes(name: str) -> str:
    path = SHIPPED if name == "shipped" else Path(name)
    meta = path.with_suffix(".json")
    if name == "random" or not meta.is_file():
        return "-"
    seconds = json.loads(meta.read_text()).get("seconds_this_run")
    return f"{seconds / 60:.0f}" if seconds else "?"


def probe(model, X: np.ndarray, y: np.ndarray, folds, defects: list[str]) -> float:
    predicted = np.empty(len(y), dtype=object)
    for train, test in folds:
        predicted[test] = model.fit(X[train], y[train]).predict(X[test])
    return f1_score(y, predicted.astype(str), labels=defects, average="macro", zero_division=0)


def interval(diffs: list[float]) -> tuple[float, float]:
    if len(diffs) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
    return float(np.mean(diffs) - half), float(np.mean(diffs) + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS), help="repeatable; default both")
    parser.add_argument("--backbone", action="append", help="shipped, random or a weights file; repeatable; default shipped")
    parser.add_argument("--seeds", type=int, default=5, help="fold seeds (0..N-1)")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--cr7-images", type=int, default=600, help="cr7-det source images used (0: all 4,140)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/materials"))
    args = parser.parse_args()
    use_one_thread()
    backbones = args.backbone or ["shipped"]
    rows = []
    for name in args.dataset or list(DATASETS):
        taxonomy = Taxonomy.load(DATASETS[name][2])
        crops = load_labelled(crops_of(name, args.work, (args.cr7_images or None) if name == "cr7-det" else None), taxonomy)
        defects = sorted({s for s in crops.subtypes if s != BACKGROUND})
        base = ClassifierConfig(embedding=False, texture=True)
        cache = EmbeddingCache()  # texture rows and embeddings, computed once per crop
        X_base = build_features(crops.records, base.feature_spec(), None, cache, progress=False)
        print(f"\n{name}: {len(crops.records)} crops from {len(np.unique(crops.groups))} source images; {args.cv}-fold CV grouped "
              f"by source image, fold seeds 0..{args.seeds - 1}", flush=True)
        scores = {"geometry+texture": []}
        for seed in range(args.seeds):
            with parallel_folds():
                result = cross_validate(X_base, crops, taxonomy, replace(base, seed=seed), base.feature_spec(), args.cv, progress=False)
            scores["geometry+texture"].append(float(np.mean(result.per_fold["hierarchy"])))
        print(f"  geometry+texture: {np.mean(scores['geometry+texture']):.3f} +- {np.std(scores['geometry+texture']):.3f}", flush=True)
        for backbone in backbones:
            config = backbone_config(backbone)
            embedder, spec = config.embedder(), config.feature_spec()
            start = time.perf_counter()
            X = build_features(crops.records, spec, embedder, cache, progress=False)
            vectors = normalize(X[:, spec.n_tabular:])  # the embedding alone, for the probes
            with_embedding, knn, logistic = [], [], []
            for seed in range(args.seeds):
                with parallel_folds():
                    result = cross_validate(X, crops, taxonomy, replace(config, seed=seed), spec, args.cv, progress=False)
                with_embedding.append(float(np.mean(result.per_fold["hierarchy"])))
                folds = grouped_folds(crops.subtypes, crops.groups, args.cv, seed)
                knn.append(probe(KNeighborsClassifier(5, metric="cosine", weights="distance"), vectors, crops.subtypes, folds, defects))
                logistic.append(probe(LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced"), vectors, crops.subtypes, folds, defects))
            gains = [w - b for w, b in zip(with_embedding, scores["geometry+texture"])]
            low, high = interval(gains)
            row = (name, backbone, np.mean(scores["geometry+texture"]), np.mean(with_embedding), np.std(with_embedding), np.mean(gains),
                   np.std(gains), low, high, np.mean(knn), np.std(knn), np.mean(logistic), np.std(logistic), pretrain_minutes(backbone))
            rows.append(row)
            print(f"  {backbone}: g+t+e {row[3]:.3f} +- {row[4]:.3f}; gain {row[5]:+.3f} +- {row[6]:.3f} (95 % {low:+.3f} to {high:+.3f}); "
                  f"kNN on the embedding {row[9]:.3f} +- {row[10]:.3f}, logistic {row[11]:.3f} +- {row[12]:.3f}; "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    print("\n| material | backbone | geometry + texture | + embedding | gain (paired) | 95 % interval | kNN on embedding | "
          "logistic on embedding | pretraining, min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {Path(r[1]).name} | {r[2]:.3f} | {r[3]:.3f} +- {r[4]:.3f} | {r[5]:+.3f} +- {r[6]:.3f} | {r[7]:+.3f} to {r[8]:+.3f} | "
              f"{r[9]:.3f} +- {r[10]:.3f} | {r[11]:.3f} +- {r[12]:.3f} | {r[13]} |")


if __name__ == "__main__":
    main()
