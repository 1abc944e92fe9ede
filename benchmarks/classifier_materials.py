"""The classifier's feature sets on both shipped materials: grouped K-fold CV, several fold seeds.

For each data set (magnetic tile: pixel masks; cr7-det cold-rolled steel: YOLO boxes), the crops are
extracted once with `extract`'s defaults (kept in --work), every feature block is built once (the
shipped default backbone's embedding, texture, geometry), and each feature set is cross-validated
with K folds grouped by source image (byte-identical twins are one group) for each fold seed.
Printed per feature set: defect-subtype macro-F1, mean and spread over the seeds, then the mean
per-subtype F1. With --tune N, a `tune` study of N trials is run on the seed-0 folds and its best
settings are then scored on all seeds' folds like the fixed feature sets (the seed-0 figure of a
tuned setting is optimistic: it was chosen on those folds; the other seeds are fairer).

    .venv/bin/python benchmarks/classifier_materials.py [--dataset magnetic-tile --dataset cr7-det]
        [--seeds 5] [--cv 5] [--features geometry+texture ...] [--tune 30] [--images 600]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from defectkit.classifier import ClassifierConfig
from defectkit.embed import EmbeddingCache
from defectkit.features import build_features, feature_columns
from defectkit.jobs.evaluate import cross_validate
from defectkit.jobs.extract import ExtractOptions, extract
from defectkit.labelled import load_labelled
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.threads import parallel_folds, use_one_thread

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DATASETS = {
    "magnetic-tile": (SHARED / "magnetic-tile", "masks", ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml"),
    "cr7-det": (SHARED / "cr7-det", "yolo", ROOT / "configs" / "taxonomy" / "cr7-det.yaml"),
}
FEATURE_SETS = {
    "geometry": dict(embedding=False),
    "geometry+texture": dict(embedding=False, texture=True),
    "geometry+embedding (default)": dict(),
    "geometry+texture+embedding": dict(texture=True),
    "g+t+e, flat stack": dict(texture=True, flat=True),
    "g+t+e, stack folds grouped": dict(texture=True, grouped_stack=True),
}


def crops_of(name: str, work: Path, images: int | None) -> Path:
    """The data set's crops, extracted once with extract's defaults (a subset of ``images`` source
    images, evenly spread over the sorted list, when given)."""
    src, format, taxonomy = DATASETS[name]
    out = work / (name if not images else f"{name}-{images}")
    if not (out / "manifest.jsonl").is_file():
        source = src
        if images:
            from defectkit.data import read_dataset

            samples = sorted(read_dataset(src, format), key=lambda s: str(s.image_path))
            keep = {str(s.image_path) for s in samples[:: max(1, len(samples) // images)][:images]}
            source = _subset(src, format, keep, work / f"{name}-{images}-src")
        start = time.perf_counter()
        summary = extract(source, out, Taxonomy.load(taxonomy), ExtractOptions(format=format), progress=True)
        print(f"{name}: {summary.images} images -> {sum(summary.crops.values())} crops in {time.perf_counter() - start:.0f} s; "
              f"{len(summary.skipped)} skipped")
    return out


def _subset(src: Path, format: str, keep: set[str], folder: Path) -> Path:
    """A folder of links to the kept images and their labels, in the data set's own layout."""
    for image in keep:
        image = Path(image)
        relative = image.relative_to(src)
        siblings = [image] + [p for pattern in (f"{image.stem}.*", f"{image.stem}_*") for p in image.parent.glob(pattern) if p != image]
        if format == "yolo":
            siblings += list((src / "label").glob(f"{image.stem}.txt"))
        for file in siblings:
            target = folder / (file.relative_to(src) if file.is_relative_to(src) else relative.parent / file.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(file)
    for extra in ("data.yaml", "classes.txt"):
        if (src / extra).is_file() and not (folder / extra).exists():
            (folder / extra).symlink_to(src / extra)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS), help="repeatable; default both")
    parser.add_argument("--features", action="append", choices=sorted(FEATURE_SETS), help="repeatable; default all")
    parser.add_argument("--seeds", type=int, default=5, help="fold seeds (0..N-1)")
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--tune", type=int, default=0, help="also run a tune study of this many trials (seed-0 folds)")
    parser.add_argument("--images", type=int, default=0, help="use this many source images per data set (0: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/materials"))
    parser.add_argument("--train-default", action="store_true",
                        help="only time `train` with its defaults (feature set chosen by grouped CV) against `train --no-texture`")
    args = parser.parse_args()
    use_one_thread()
    for name in args.dataset or list(DATASETS):
        taxonomy = Taxonomy.load(DATASETS[name][2])
        if args.train_default:
            default_train_cost(name, crops_of(name, args.work, args.images or None), taxonomy, args)
            continue
        crops = load_labelled(crops_of(name, args.work, args.images or None), taxonomy)
        base = ClassifierConfig(texture=True)
        spec_all, embedder = base.feature_spec(), base.embedder()
        start = time.perf_counter()
        X_all = build_features(crops.records, spec_all, embedder, EmbeddingCache(), progress=True)
        print(f"\n{name}: {len(crops.records)} crops from {len(np.unique(crops.groups))} source images; features in "
              f"{time.perf_counter() - start:.0f} s; {args.cv}-fold CV grouped by source image, fold seeds 0..{args.seeds - 1}")
        settings = {label: replace(ClassifierConfig(), **FEATURE_SETS[label]) for label in args.features or FEATURE_SETS}
        if args.tune:
            settings[f"tune ({args.tune} trials)"] = tuned(crops.path, taxonomy, args, name)
        defects = sorted({s for s in crops.subtypes if s != BACKGROUND})
        print(f"{'setting':<34} {'defect macro-F1':>18}  " + " ".join(f"{s[:9]:>9}" for s in defects) + "   seconds")
        for label, config in settings.items():
            spec = config.feature_spec()
            X = feature_columns(X_all, spec_all, spec, embedder.dim)
            scores, per_class, start = [], {s: [] for s in defects}, time.perf_counter()
            for seed in range(args.seeds):
                with parallel_folds():
                    result = cross_validate(X, crops, taxonomy, replace(config, seed=seed), spec, args.cv, progress=False)
                scores.append(np.mean(result.per_fold["hierarchy"]))
                for s in defects:
                    per_class[s].append(result.reports["hierarchy"]["subtype"]["per_class"][s]["f1"])
            cells = " ".join(f"{np.mean(per_class[s]):>9.3f}" for s in defects)
            print(f"{label:<34} {np.mean(scores):>10.3f} +- {np.std(scores):.3f}  {cells}   {time.perf_counter() - start:>7.0f}", flush=True)


def default_train_cost(name: str, crops: Path, taxonomy: Taxonomy, args) -> None:
    """`train`'s default (texture with or without, chosen by its grouped CV) against a fixed
    setting: the choice made, the CV scores it saw and the seconds it adds (texture features computed,
    embeddings cached)."""
    from defectkit.jobs.train import train

    import shutil

    # a fresh cache with the embeddings only: the default pays for computing texture, as a new user's run does
    shutil.rmtree(args.work / f"{name}-cost-cache", ignore_errors=True)
    cache = EmbeddingCache(args.work / f"{name}-cost-cache")
    build_features(load_labelled(crops, taxonomy).records, ClassifierConfig().feature_spec(), ClassifierConfig().embedder(), cache,
                   progress=True)
    timed = {}
    for label, choose in (("train --no-texture", False), ("train (default: feature set chosen)", True)):
        result = train(crops, taxonomy, args.work / f"{name}-model-{int(choose)}", ClassifierConfig(), args.cv, cache, progress=False,
                       choose_features=choose)
        timed[label] = result.seconds
        choice = result.summary.get("feature_choice")
        said = (f"; chose {choice['chosen']} (CV macro-F1 " + ", ".join(f"{k} {v:.3f}" for k, v in choice["cv_macro_f1"].items())
                + f"), the choice {choice['seconds']:.0f} s") if choice else ""
        print(f"{name}: {label}: {result.seconds:.0f} s{said}", flush=True)
    first, second = timed.values()
    print(f"{name}: the default costs {second - first:+.0f} s ({second / first:.1f}x) over train --no-texture, cached embeddings", flush=True)


def tuned(dataset: Path, taxonomy: Taxonomy, args, name: str) -> ClassifierConfig:
    from defectkit.jobs.tune import TuneOptions, tune

    result = tune(dataset, taxonomy, args.work / f"{name}-tuned", ClassifierConfig(),
                  TuneOptions(trials=args.tune, cv=args.cv, final=False), EmbeddingCache(), progress=False)
    print(f"tune: best trial {result.best_trial} of {result.trials} ({result.pruned} pruned), seed-0 CV {result.best_value:.3f}: {result.best_params}")
    return result.config


if __name__ == "__main__":
    main()
