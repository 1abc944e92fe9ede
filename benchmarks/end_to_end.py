"""End-to-end quality on real images: classify the held-out magnetic-tile images of a grouped split
and match the defects found to the ground-truth regions (IoU >= 0.3; thin cracks are narrow).

Prints, side by side: the `given` proposer (ground-truth regions: classification errors only), the
`classical` proposer, the classical proposer with a model trained with its hard negatives, and the
`learned` proposer (``train-proposer`` defaults, trained on the training part only; the one
``benchmarks/proposers.py`` trains for the same seed is reused from ``--proposer-work``) with a model
trained with its hard negatives, and the union of the learned and classical proposers' regions with
a model trained with the union's hard negatives.

The backbone (``--backbone``): ``pretrain`` (default) pretrains one with the ``pretrain`` defaults
on the training part's crops only, as ``benchmarks/backbone_quality.py`` does; ``random`` keeps
random weights; ``shipped`` takes checkpoints/defectkit-backbone.safetensors, which was pretrained
(without labels) on every image, the held-out ones too, so its figures are optimistic.

    .venv/bin/python benchmarks/end_to_end.py [--src ../shared/datasets/magnetic-tile] [--seed 0] [--backbone pretrain]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from defectkit.classifier import ClassifierConfig
from defectkit.data.manifest import read_manifest, write_manifest
from defectkit.defect import Defect
from defectkit.export import defect_mask
from defectkit.jobs.extract import ExtractOptions, extract
from defectkit.matching import iou_matrix, one_to_one
from defectkit.pipeline import DefectClassifier
from defectkit.jobs.pretrain import PretrainConfig, pretrain
from defectkit.propose import create_proposer
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.jobs.train import train

from proposers import CLASSES, learned_model, split  # noqa: E402 (a sibling benchmark: the same split, the same learned proposer)

ROOT = Path(__file__).resolve().parents[1]
IOU = 0.3


def match(predicted: list[np.ndarray], truth: list[np.ndarray]) -> list[tuple[int, int]]:
    """One-to-one pairs (prediction, truth) with IoU >= IOU, best first."""
    return one_to_one(iou_matrix(predicted, truth), IOU)


def score(classifier: DefectClassifier, images: dict[str, list[dict]], subtypes: list[str]) -> dict:
    counts = defaultdict(Counter)  # subtype -> tp, predicted, truth
    image_right = 0
    false_alarms = []
    start = time.perf_counter()
    for (image, truths), result in zip(images.items(), classifier.classify_batch(list(images))):
        if result.error:
            raise RuntimeError(f"{image}: {result.error}")
        shape = (result.size[1], result.size[0])
        predicted = [d for d in result.defects if d.category != BACKGROUND]
        truth_masks = [defect_mask(Defect.from_dict(t)) for t in truths]
        pairs = match([d.region.full_mask(shape) for d in predicted], truth_masks)
        for i, j in pairs:
            if predicted[i].subtype == truths[j]["subtype"]:
                counts[truths[j]["subtype"]]["tp"] += 1
        for d in predicted:
            counts[d.subtype]["predicted"] += 1
        for t in truths:
            counts[t["subtype"]]["truth"] += 1
        if truths:
            image_right += any(d.subtype == truths[0]["subtype"] for d in predicted)
        else:
            false_alarms.append(len(predicted))
            image_right += not predicted
    seconds = time.perf_counter() - start
    per_class = {}
    for s in (s for s in subtypes if counts[s]["truth"]):
        c = counts[s]
        precision = c["tp"] / c["predicted"] if c["predicted"] else 0.0
        recall = c["tp"] / c["truth"] if c["truth"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[s] = (precision, recall, f1, c["truth"])
    return {
        "per_class": per_class,
        "macro_f1": float(np.mean([v[2] for v in per_class.values()])),
        "image_accuracy": image_right / len(images),
        "fp_per_free_image": float(np.mean(false_alarms)) if false_alarms else 0.0,
        "images_per_second": len(images) / seconds,
    }


def split_images(src: Path, seed: int) -> tuple[dict, set[str]]:
    """benchmarks/proposers.py's split (by image, per class), so that the learned proposer it trains
    for this seed saw only this training part: its parts and the training part's image paths."""
    parts = split(src, seed)
    return parts, {str(p) for cls in CLASSES for p in parts[cls]["train"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "datasets" / "magnetic-tile")
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/end-to-end"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="Score only this many test images (0: all).")
    parser.add_argument("--backbone", choices=["pretrain", "random", "shipped"], default="pretrain",
                        help="pretrain on the training part (default), random weights, or the shipped backbone (has seen the test images)")
    parser.add_argument("--reuse", action="store_true", help="keep a backbone pretrained earlier in --work")
    parser.add_argument("--proposer-work", type=Path, default=Path("/tmp/defectkit-bench/proposers"),
                        help="where benchmarks/proposers.py keeps its learned proposers (one is trained there if missing)")
    args = parser.parse_args()
    taxonomy = Taxonomy.load(ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml")
    work = args.work
    started = time.perf_counter()

    plain = work / "crops"
    extract(args.src, plain, taxonomy, ExtractOptions(), progress=False)
    records = read_manifest(plain)
    parts, train_images = split_images(args.src, args.seed)
    train_part = [r for r in records if r["image"] in train_images]
    test_part = [r for r in records if r["image"] not in train_images]
    test_images: dict[str, list[dict]] = defaultdict(list)
    for r in test_part:
        test_images[r["image"]] += [r] if r["category"] != BACKGROUND else []
    if args.limit:  # every k-th image, so that each class keeps its share
        ordered = sorted(test_images.items())
        test_images = dict(ordered[:: max(1, len(ordered) // args.limit)][: args.limit])
    write_manifest(work / "train" / "manifest.jsonl", train_part)
    (work / "train" / "extract.json").write_bytes((plain / "extract.json").read_bytes())

    def with_negatives(name: str, proposer: str, model: Path | None = None) -> list[dict]:
        """The training part's crops with ``proposer``'s hard negatives, as data set ``work/name``."""
        crops = work / f"crops-{name}"
        extract(args.src, crops, taxonomy, ExtractOptions(negatives_from=proposer, proposer_model=model and str(model)), progress=False)
        rows = [r for r in read_manifest(crops) if r["image"] in train_images]
        write_manifest(work / name / "manifest.jsonl", rows)
        (work / name / "extract.json").write_bytes((plain / "extract.json").read_bytes())
        return rows

    with_classical = with_negatives("train-negatives", "classical")
    learned = learned_model(args.src, parts, args.seed, args.proposer_work, retrain=False, changes={})
    with_learned = with_negatives("train-learned-negatives", "learned", learned)
    with_union = with_negatives("train-union-negatives", "union", learned)

    weights = {"random": "random", "shipped": "default"}.get(args.backbone, str(work / "backbone.safetensors"))
    if args.backbone == "pretrain" and not (args.reuse and Path(weights).is_file()):
        pretrain(work / "train", weights, replace(PretrainConfig(), seed=args.seed), progress=False)
    config = ClassifierConfig(seed=args.seed, weights=weights)
    train(work / "train", taxonomy, work / "model", config, cv=0, progress=False)
    train(work / "train-negatives", taxonomy, work / "model-negatives", config, cv=0, progress=False)
    train(work / "train-learned-negatives", taxonomy, work / "model-learned", config, cv=0, progress=False, proposer=learned)
    train(work / "train-union-negatives", taxonomy, work / "model-union", config, cv=0, progress=False, proposer=learned)

    subtypes = [s for s in taxonomy.subtypes if s != BACKGROUND]
    runs = {
        "given (GT regions)": DefectClassifier.load(work / "model", create_proposer("given")),
        "classical": DefectClassifier.load(work / "model", create_proposer("classical")),
        "classical + hard negatives": DefectClassifier.load(work / "model-negatives", create_proposer("classical")),
        "learned + hard negatives": DefectClassifier.load(work / "model-learned"),
        "learned+classical + hard negatives": DefectClassifier.load(work / "model-union", "union"),
    }
    results = {name: score(clf, test_images, subtypes) for name, clf in runs.items()}

    n_free = sum(1 for t in test_images.values() if not t)
    print(f"split seed {args.seed}: {len(test_images)} held-out images ({len(test_images) - n_free} defective, {n_free} defect-free); "
          f"{len(train_part)} training crops; hard negatives added: "
          + ", ".join(f"{sum(r['origin'] == 'negative' for r in rows)} {name}"
                      for name, rows in (("classical", with_classical), ("learned", with_learned), ("learned+classical", with_union))))
    print(f"matching: IoU >= {IOU}; backbone: {args.backbone} ({config.weights})")
    header = f"{'':<28}" + "".join(f"{name:>36}" for name in results)
    print(header)
    for s in next(iter(results.values()))["per_class"]:
        cells = "".join(f"{'P %.2f R %.2f F1 %.2f' % r['per_class'][s][:3]:>36}" for r in results.values())
        print(f"{s + ' (n=%d)' % next(iter(results.values()))['per_class'][s][3]:<28}{cells}")
    for key, label in (("macro_f1", "subtype macro-F1"), ("image_accuracy", "image-level accuracy"),
                       ("fp_per_free_image", "false positives / free image"), ("images_per_second", "images / s")):
        print(f"{label:<28}" + "".join(f"{r[key]:>36.2f}" for r in results.values()))
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
