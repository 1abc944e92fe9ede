"""Is a pretrained backbone a good start on defect classes it never saw? A leave-classes-out check.

The magnetic-tile images are cut in two by class: the backbone is pretrained (the recipe of
benchmarks/backbone_quality.py) on the crops of the images with blowholes, cracks and uneven
patches and on half of the defect-free images; the ensemble is then trained and scored, by grouped
5-fold cross-validation, on the other images only: breaks, frays and the other half of the
defect-free images. No image, crop or label of the second part reaches pretraining, so this is what a
user retraining only the ensemble on new classes would see. Printed side by side: geometry alone,
random-init backbone, pretrained backbone (each + geometry, hierarchy).

    .venv/bin/python benchmarks/backbone_transfer.py [--src ../shared/datasets/magnetic-tile] [--crops DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backbone_quality import PRETRAIN, extract_crops  # noqa: E402

from defectkit.classifier import ClassifierConfig  # noqa: E402
from defectkit.data.manifest import read_manifest, write_manifest  # noqa: E402
from defectkit.data.split import image_strata  # noqa: E402
from defectkit.embed import EmbeddingCache  # noqa: E402
from defectkit.jobs.evaluate import cross_validate  # noqa: E402
from defectkit.features import build_features  # noqa: E402
from defectkit.labelled import load_labelled  # noqa: E402
from defectkit.jobs.pretrain import pretrain  # noqa: E402
from defectkit.taxonomy import BACKGROUND, Taxonomy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UNSEEN = {"structural": ["break", "fray"]}


def cut(records: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """(pretraining part, transfer part), whole images on each side."""
    strata = image_strata(records)
    unseen = {s for subs in UNSEEN.values() for s in subs}
    free = sorted(image for image, stratum in strata.items() if stratum == BACKGROUND)
    rng = np.random.default_rng(seed)
    transfer_free = {free[i] for i in rng.permutation(len(free))[: len(free) // 2]}
    to_transfer = {image for image, stratum in strata.items() if stratum in unseen} | transfer_free
    first = [r for r in records if r["image"] not in to_transfer]
    second = [r for r in records if r["image"] in to_transfer and r["subtype"] in unseen | {BACKGROUND}]
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "datasets" / "magnetic-tile")
    parser.add_argument("--crops", type=Path, help="an extracted crop data set to reuse (skips extraction)")
    parser.add_argument("--work", type=Path, help="where the parts, backbone and cache go (default: temporary)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=PRETRAIN.epochs)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    taxonomy = Taxonomy.load(ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml")
    unseen_taxonomy = Taxonomy("magnetic-tile-unseen", UNSEEN)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        crops_dir = args.crops or extract_crops(args.src, work, taxonomy, args.quiet)
        first, second = cut(read_manifest(crops_dir), args.seed)
        write_manifest(work / "pretrain" / "manifest.jsonl", first)
        write_manifest(work / "transfer" / "manifest.jsonl", second)
        weights = work / "backbone.safetensors"
        if not weights.is_file():
            pretrain(work / "pretrain", weights, replace(PRETRAIN, seed=args.seed, epochs=args.epochs), progress=not args.quiet)
        crops = load_labelled(work / "transfer", unseen_taxonomy)
        cache = EmbeddingCache(work / "cache")
        base = ClassifierConfig(seed=args.seed)
        variants = {
            "geometry only": replace(base, embedding=False),
            "random-init + geometry": replace(base, weights="random"),
            "pretrained + geometry": replace(base, weights=str(weights)),
        }
        rows = {}
        for name, config in variants.items():
            spec = config.feature_spec()
            X = build_features(crops.records, spec, config.embedder(), cache)
            result = cross_validate(X, crops, unseen_taxonomy, config, spec, k=5, progress=False)
            rows[name] = (result.reports["hierarchy"], result.per_fold["hierarchy"])
    print(f"pretraining part: {len(first)} crops of {sorted({r['subtype'] for r in first})}; "
          f"transfer part: {crops.summary()['per_subtype']} from {crops.summary()['images']} images")
    print(f"{'variant (hierarchy, 5-fold grouped CV)':<40}{'macro-F1':>10}{'fold sd':>9}{'break F1':>10}{'fray F1':>9}{'cat acc':>9}{'recall':>8}")
    for name, (r, folds) in rows.items():
        per = r["subtype"]["per_class"]
        print(f"{name:<40}{r['subtype']['macro_f1']:>10.3f}{np.std(folds):>9.3f}{per['break']['f1']:>10.3f}"
              f"{per['fray']['f1']:>9.3f}{r['category']['accuracy']:>9.3f}{r['detection']['defect_recall']:>8.3f}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; pretraining: {replace(PRETRAIN, epochs=args.epochs)}")


if __name__ == "__main__":
    main()
