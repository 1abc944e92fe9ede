"""Does the contrastively pretrained backbone pay for itself? Held-out quality on real magnetic tiles.

One command does it all: extract the crops of ../shared/datasets/magnetic-tile, then for each split
seed (grouped by source image, 30 % test): pretrain the backbone on the train part only, train every
variant on the train part, score it on the test part. Printed side by side on the same split:

- geometry (shape + intensity + position) features alone, hierarchy;
- random-init backbone + geometry, hierarchy;
- pretrained backbone + geometry: XGBoost, kNN, logistic regression alone, flat stack, hierarchy;
- the same timm backbone fine-tuned end to end with a linear head (benchmarks/cnn_baseline.py).

Figures are defect-subtype macro-F1 (background left out of the average), category accuracy and recall
of defects against background, then per-subtype F1 of the pretrained hierarchy.

    .venv/bin/python benchmarks/backbone_quality.py [--src ../shared/datasets/magnetic-tile] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnn_baseline import predict_cnn, train_cnn  # noqa: E402

from defectkit.classifier import ClassifierConfig, decide, split_head  # noqa: E402
from defectkit.data.manifest import read_manifest, write_manifest  # noqa: E402
from defectkit.data.split import split_records  # noqa: E402
from defectkit.embed import EmbeddingCache  # noqa: E402
from defectkit.jobs.extract import ExtractOptions, extract  # noqa: E402
from defectkit.features import build_features  # noqa: E402
from defectkit.metrics import report  # noqa: E402
from defectkit.jobs.pretrain import PretrainConfig, pretrain  # noqa: E402
from defectkit.taxonomy import Taxonomy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"subtype macro-F1": 0.92, "category accuracy": 0.95, "defect recall": 0.95}


def figures(taxonomy: Taxonomy, truth, subtypes, categories=None) -> dict:
    r = report(taxonomy, truth, subtypes, categories)
    return {
        "subtype macro-F1": r["subtype"]["macro_f1"],
        "category accuracy": r["category"]["accuracy"],
        "defect recall": r["detection"]["defect_recall"],
        "background false alarm": r["detection"]["background_false_alarm"],
        "per_class_f1": {s: v["f1"] for s, v in r["subtype"]["per_class"].items()},
    }


def score_variants(taxonomy, train, test, config: ClassifierConfig, cache, prefix: str, members: bool) -> dict:
    """Hierarchy (and, with ``members``, each base learner and the flat stack) trained on ``train``."""
    spec = config.feature_spec()
    embedder = config.embedder()
    X_train = build_features(train, spec, embedder, cache)
    X_test = build_features(test, spec, embedder, cache)
    y_train = np.array([r["subtype"] for r in train])
    y_test = np.array([r["subtype"] for r in test])
    out = {}
    if members:
        flat = config.model(taxonomy, spec, flat=True).fit(X_train, y_train)
        stack, Xt = split_head(flat, X_test)
        for name, proba in stack.member_proba(Xt).items():
            out[f"{prefix} {name}"] = figures(taxonomy, y_test, stack.classes_[np.argmax(proba, axis=1)])
        out[f"{prefix} flat stack"] = figures(taxonomy, y_test, flat.predict(X_test))
    model = config.model(taxonomy, spec).fit(X_train, y_train)
    category, subtype, *_ = decide(model, X_test)
    out[f"{prefix} hierarchy"] = figures(taxonomy, y_test, subtype, category)
    return out


def run_seed(crops_dir: Path, work: Path, taxonomy: Taxonomy, seed: int, args) -> dict:
    records = read_manifest(crops_dir)
    train, test = split_records(records, test_size=0.3, seed=seed)
    part = work / f"seed{seed}"
    write_manifest(part / "train" / "manifest.jsonl", train)
    cache = EmbeddingCache(work / "cache")
    results, seconds = {}, {}
    y_test = np.array([r["subtype"] for r in test])

    base = ClassifierConfig(seed=seed)
    start = time.perf_counter()
    results.update(score_variants(taxonomy, train, test, replace(base, embedding=False), cache, "geometry only", False))
    results.update(score_variants(taxonomy, train, test, replace(base, weights="random"), cache, "random-init", False))
    seconds["geometry + random variants"] = time.perf_counter() - start

    weights = part / "backbone.safetensors"
    start = time.perf_counter()
    if not (args.reuse and weights.is_file()):
        pretrain(part / "train", weights, replace(PRETRAIN, seed=seed, epochs=args.epochs), progress=not args.quiet)
    seconds["pretrain"] = time.perf_counter() - start
    start = time.perf_counter()
    results.update(score_variants(taxonomy, train, test, replace(base, weights=str(weights)), cache, "pretrained", True))
    seconds["pretrained variants"] = time.perf_counter() - start

    if not args.no_cnn:
        start = time.perf_counter()
        model = train_cnn(train, PRETRAIN.backbone, PRETRAIN.image_size, PRETRAIN.mask_mode, seed=seed, progress=not args.quiet)
        predicted, _ = predict_cnn(model, test)
        results["fine-tuned CNN"] = figures(taxonomy, y_test, predicted)
        seconds["fine-tuned CNN"] = time.perf_counter() - start
    counts = {"train crops": len(train), "test crops": len(test),
              "test defects": int(sum(r["subtype"] != "background" for r in test)),
              "test images": len({r["image"] for r in test})}
    return {"results": results, "seconds": {k: round(v, 1) for k, v in seconds.items()}, "counts": counts}


def print_table(runs: dict[int, dict]) -> None:
    seeds = sorted(runs)
    variants = list(runs[seeds[0]]["results"])
    metrics = list(TARGETS)
    header = f"{'variant':<26}" + "".join(f"{m + ' s' + str(s):>11}" for m in ("F1", "cat", "rec") for s in seeds) + "".join(f"{'mean ' + m:>10}" for m in ("F1", "cat", "rec"))
    print(header)
    print("-" * len(header))
    for variant in variants:
        row = f"{variant:<26}"
        for metric in metrics:
            row += "".join(f"{runs[s]['results'][variant][metric]:>11.3f}" for s in seeds)
        for metric in metrics:
            row += f"{np.mean([runs[s]['results'][variant][metric] for s in seeds]):>10.3f}"
        print(row)
    print("\nF1 = defect-subtype macro-F1; cat = category accuracy; rec = recall of defects against background. "
          "Targets (mean): " + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items()))
    main = runs[seeds[0]]["results"]["pretrained hierarchy"]
    for metric, target in TARGETS.items():
        value = float(np.mean([runs[s]["results"]["pretrained hierarchy"][metric] for s in seeds]))
        print(f"  pretrained hierarchy {metric}: {value:.3f}  {'PASS' if value >= target else 'FAIL'} (target {target})")
    print("\nper-subtype F1 of the pretrained hierarchy:", ", ".join(
        f"{s} " + "/".join(f"{runs[seed]['results']['pretrained hierarchy']['per_class_f1'][s]:.2f}" for seed in seeds)
        for s in main["per_class_f1"]))
    for seed in seeds:
        print(f"seed {seed}: {runs[seed]['counts']}; seconds {runs[seed]['seconds']}")


PRETRAIN = PretrainConfig()


def extract_crops(src: Path, work: Path, taxonomy: Taxonomy, quiet: bool) -> Path:
    if not src.is_dir():
        sys.exit(f"no data at {src}: pass --src (the magnetic-tile data set) or --crops")
    extract(src, work / "crops", taxonomy, ExtractOptions(format="masks"), progress=not quiet)
    return work / "crops"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "datasets" / "magnetic-tile")
    parser.add_argument("--crops", type=Path, help="an extracted crop data set to reuse (skips extraction)")
    parser.add_argument("--work", type=Path, help="where splits, backbones and caches go (default: a temporary folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=PRETRAIN.epochs, help="pretraining epochs")
    parser.add_argument("--reuse", action="store_true", help="reuse backbones already pretrained in --work")
    parser.add_argument("--no-cnn", action="store_true", help="skip the fine-tuned CNN baseline")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    taxonomy = Taxonomy.load(ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        crops = args.crops or extract_crops(args.src, work, taxonomy, args.quiet)
        runs = {seed: run_seed(crops, work, taxonomy, seed, args) for seed in args.seeds}
    print_table(runs)
    print(f"\ntotal {time.perf_counter() - started:.0f} s on {torch.get_num_threads()} threads; pretraining: {replace(PRETRAIN, epochs=args.epochs)}")
    if args.json:
        args.json.write_text(json.dumps({str(s): r for s, r in runs.items()}, indent=2))


if __name__ == "__main__":
    main()
