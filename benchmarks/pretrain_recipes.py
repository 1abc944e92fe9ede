"""Which pretraining recipe, backbone and image size pay? One held-out split, one line per recipe.

For each recipe (method:image size:mask mode:epochs[:backbone]) it pretrains on the train part of a
grouped split of the magnetic-tile crops, trains the hierarchy (and its base learners) on the train
part and scores them on the test part. Meant for a CUDA machine, where the whole default grid takes
minutes (bigger backbones and sizes included); on 2 CPU cores one 64 px recipe takes about 15 min.

    .venv/bin/python benchmarks/pretrain_recipes.py --device cuda [--crops DIR] [--seed 0] [RECIPE ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backbone_quality import PRETRAIN, ROOT, extract_crops, score_variants  # noqa: E402

from defectkit.classifier import ClassifierConfig  # noqa: E402
from defectkit.data.manifest import read_manifest, write_manifest  # noqa: E402
from defectkit.data.split import split_records  # noqa: E402
from defectkit.embed import EmbeddingCache  # noqa: E402
from defectkit.jobs.pretrain import pretrain  # noqa: E402
from defectkit.taxonomy import Taxonomy  # noqa: E402

GRID = [
    "simclr:64:channel:30", "simclr:64:none:30", "simclr:96:none:30", "supcon:64:channel:30", "simclr:64:channel:100",
    "simclr:96:channel:100", "simclr:128:channel:100:resnet18", "simclr:128:channel:100:efficientnet_b0",
]


def parse(recipe: str):
    method, size, mask, epochs, *backbone = recipe.split(":")
    return replace(PRETRAIN, method=method, image_size=int(size), mask_mode=mask, epochs=int(epochs),
                   backbone=backbone[0] if backbone else PRETRAIN.backbone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", default=GRID, help="method:size:mask:epochs[:backbone]")
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "datasets" / "magnetic-tile")
    parser.add_argument("--crops", type=Path, help="an extracted crop data set to reuse (skips extraction)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    args = parser.parse_args()
    taxonomy = Taxonomy.load(ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        crops = args.crops or extract_crops(args.src, work, taxonomy, quiet=True)
        train, test = split_records(read_manifest(crops), test_size=0.3, seed=args.seed)
        write_manifest(work / "train" / "manifest.jsonl", train)
        cache = EmbeddingCache(work / "cache")
        base = ClassifierConfig(seed=args.seed)
        print(f"{'recipe':<42}{'minutes':>8}{'loss':>7}  subtype macro-F1 on the test part (seed {args.seed})")
        rows = {"random weights": (None, replace(base, weights="random"), 0.0)}
        for recipe in args.recipes:
            config = replace(parse(recipe), seed=args.seed, device=args.device)
            weights = work / f"{recipe.replace(':', '-')}.safetensors"
            start = time.perf_counter()
            summary = pretrain(work / "train", weights, config, progress=False)
            rows[recipe] = (summary["final_loss"], replace(base, weights=str(weights)), (time.perf_counter() - start) / 60)
        for name, (loss, config, minutes) in rows.items():
            scores = score_variants(taxonomy, train, test, config, cache, "", members=True)
            figures = "  ".join(f"{k.strip()} {v['subtype macro-F1']:.3f}" for k, v in scores.items())
            print(f"{name:<42}{minutes:>8.1f}{loss if loss is not None else float('nan'):>7.2f}  {figures}", flush=True)


if __name__ == "__main__":
    main()
