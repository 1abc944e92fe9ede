"""End-to-end quality on real images: classify the held-out images of a grouped split and match the
defects found to the ground-truth regions (IoU >= 0.3; thin cracks are narrow), on magnetic tile
(pixel masks: IoU of pixels) or cr7-det cold-rolled steel (``--dataset cr7-det``, YOLO boxes, 1,200
images by default: IoU of boxes; no defect-free images, so no false alarms per clean image).

Prints, side by side: the `given` proposer (ground-truth regions: classification errors only), the
`classical` proposer, the classical proposer with a model trained with its hard negatives, and the
`learned` proposer (``train-proposer`` defaults, trained on the training part only; the one
``benchmarks/proposers.py`` trains for the same seed is reused from ``--proposer-work``) with a model
trained with its hard negatives, and the union of the learned and classical proposers' regions with
a model trained with the union's hard negatives (and, ``learned + hn + matched``, the learned
proposer with a model trained as ``train`` does by default, grouped CV choosing its defect
threshold, on its hard negatives and matched proposals). The ``+ matched`` columns also learn from the
proposer's regions that match a defect, labelled as it (``extract``'s ``proposal_positives``);
the other hard-negative columns leave them out. ``--no-learned`` skips the learned columns (each
seed's learned proposer takes most of an hour to train on this CPU); ``--matched-only`` keeps only
``given`` and the ``+ matched`` columns (what ``extract`` does by default); ``--set KEY=VALUE`` takes
the learned proposer trained with that setting (``benchmarks/proposers.py --set``, e.g. epochs=240).

The backbone (``--backbone``): ``pretrain`` (default) pretrains one with the ``pretrain`` defaults
on the training part's crops only, as ``benchmarks/backbone_quality.py`` does; ``random`` keeps
random weights; ``shipped`` takes checkpoints/defectkit-backbone.safetensors, which was pretrained
(without labels) on every image, the held-out ones too, so its figures are optimistic.

    .venv/bin/python benchmarks/end_to_end.py [--dataset magnetic-tile|cr7-det] [--seed 0] [--seeds 1] [--backbone pretrain] [--no-learned]
        [--matched-only] [--set KEY=VALUE]
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
from defectkit.geometry import Region
from defectkit.matching import MATCH_IOU as IOU, iou_matrix, one_to_one, region_iou
from defectkit.pipeline import DefectClassifier
from defectkit.jobs.pretrain import PretrainConfig, pretrain
from defectkit.propose import create_proposer
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.jobs.train import train

import proposers_boxes  # noqa: E402 (sibling benchmarks: the same splits, the same learned proposers)
from proposers import CLASSES, learned_model, parse_setting, split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


_EXTRACTED: set = set()


def extract_once(src: Path, out: Path, taxonomy: Taxonomy, options: ExtractOptions) -> None:
    """``extract``, but only once per process for the same folder and options: the crops of every
    image do not depend on the split seed (each seed then keeps its training part's)."""
    if (out, options) not in _EXTRACTED:
        extract(src, out, taxonomy, options, progress=False)
        _EXTRACTED.add((out, options))


def match(predicted: list[Defect], truths: list[dict], shape: tuple[int, int], boxes: bool) -> list[tuple[int, int]]:
    """One-to-one pairs (prediction, truth) with IoU >= IOU, best first: of boxes where the truth is a
    box, else of pixels."""
    if boxes:
        truth_regions = [Region.from_polygon(t["polygon"], shape) for t in truths]
        iou = region_iou(truth_regions, [d.region for d in predicted], boxes=True).T
    else:
        iou = iou_matrix([d.region.full_mask(shape) for d in predicted], [defect_mask(Defect.from_dict(t)) for t in truths])
    return one_to_one(iou, IOU)


def score(classifier: DefectClassifier, images: dict[str, list[dict]], subtypes: list[str], boxes: bool) -> dict:
    counts = defaultdict(Counter)  # subtype -> tp, predicted, truth
    image_right = 0
    false_alarms = []
    start = time.perf_counter()
    for (image, truths), result in zip(images.items(), classifier.classify_batch(list(images))):
        if result.error:
            raise RuntimeError(f"{image}: {result.error}")
        shape = (result.size[1], result.size[0])
        predicted = [d for d in result.defects if d.category != BACKGROUND]
        pairs = match(predicted, truths, shape, boxes) if predicted and truths else []
        for i, j in pairs:
            if predicted[i].subtype == truths[j]["subtype"]:
                counts[truths[j]["subtype"]]["tp"] += 1
        for d in predicted:
            counts[d.subtype]["predicted"] += 1
        for t in truths:
            counts[t["subtype"]]["truth"] += 1
        if truths:
            image_right += any(d.subtype in {t["subtype"] for t in truths} for d in predicted)
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


def steel(work: Path, images: int, seed: int) -> tuple[Path, list[Path], set[str]]:
    """cr7-det as benchmarks/proposers_boxes.py takes it: a folder of links to ``images`` images, the
    training part of its split (by content) and that part's image paths as extract names them."""
    chosen = proposers_boxes.subset(proposers_boxes.DATA, images)
    root = proposers_boxes.linked(chosen, work / f"cr7-images-{images}")
    train_paths, _ = proposers_boxes.split(chosen, seed)
    return root, train_paths, {str(root / "image" / p.name) for p in train_paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["magnetic-tile", "cr7-det"], default="magnetic-tile")
    parser.add_argument("--src", type=Path, help="the magnetic-tile folder (default ../shared/datasets/magnetic-tile)")
    parser.add_argument("--images", type=int, default=1200, help="cr7-det: images used (evenly over the file-name classes)")
    parser.add_argument("--no-learned", dest="learned", action="store_false", help="skip the learned proposer's columns")
    parser.add_argument("--matched-only", action="store_true",
                        help="only the columns trained as extract does by default (hard negatives and matched proposals), beside given")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the learned proposer trained with this setting (as benchmarks/proposers.py and proposers_boxes.py --set)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/end-to-end"))
    parser.add_argument("--seed", type=int, default=0, help="the first split seed")
    parser.add_argument("--seeds", type=int, default=1, help="run this many split seeds (seed, seed+1, ...) and print the mean and spread")
    parser.add_argument("--limit", type=int, default=0, help="Score only this many test images (0: all).")
    parser.add_argument("--backbone", choices=["pretrain", "random", "shipped"], default="pretrain",
                        help="pretrain on the training part (default), random weights, or the shipped backbone (has seen the test images)")
    parser.add_argument("--reuse", action="store_true", help="keep a backbone pretrained earlier in --work")
    parser.add_argument("--proposer-work", type=Path, default=Path("/tmp/defectkit-bench/proposers"),
                        help="where benchmarks/proposers.py keeps its learned proposers (one is trained there if missing)")
    args = parser.parse_args()
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed = [one_seed(args, seed) for seed in seeds]
    if len(seeds) > 1:
        summarise(per_seed, seeds)


def one_seed(args, seed: int) -> dict:
    """Every column's scores on seed ``seed``'s split, printed as a table."""
    taxonomy = Taxonomy.load(ROOT / "configs" / "taxonomy" / f"{args.dataset}.yaml")
    boxes = args.dataset == "cr7-det"
    work = args.work / args.dataset if boxes else args.work
    started = time.perf_counter()

    if boxes:
        fmt = "yolo"
        src, steel_train, train_images = steel(args.proposer_work, args.images, seed)
    else:
        src, fmt = args.src or ROOT.parent / "shared" / "datasets" / "magnetic-tile", "masks"
        parts, train_images = split_images(src, seed)
    plain = work / "crops"
    extract_once(src, plain, taxonomy, ExtractOptions(format=fmt))
    records = read_manifest(plain)
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

    def with_negatives(name: str, proposer: str, model: Path | None = None, positives: bool = False) -> list[dict]:
        """The training part's crops with ``proposer``'s hard negatives (and, with ``positives``, its
        proposals that match a defect, labelled as that defect), as data set ``work/name``."""
        crops = work / f"crops-{name}"
        options = ExtractOptions(format=fmt, negatives_from=proposer, proposer_model=model and str(model), proposal_positives=positives)
        extract_once(src, crops, taxonomy, options)
        rows = [r for r in read_manifest(crops) if r["image"] in train_images]
        write_manifest(work / name / "manifest.jsonl", rows)
        (work / name / "extract.json").write_bytes((plain / "extract.json").read_bytes())
        return rows

    every = not args.matched_only
    with_classical = with_negatives("train-negatives", "classical") if every else []
    with_classical_matched = with_negatives("train-classical-matched", "classical", positives=True)
    if args.learned:
        changes = dict(parse_setting(s) for s in args.set)
        if boxes:
            learned = proposers_boxes.learned_model(src, steel_train, seed, args.proposer_work, changes)
        else:
            learned = learned_model(src, parts, seed, args.proposer_work, retrain=False, changes=changes)
        with_learned = with_negatives("train-learned-negatives", "learned", learned) if every else []
        with_union = with_negatives("train-union-negatives", "union", learned) if every else []
        with_learned_matched = with_negatives("train-learned-matched", "learned", learned, positives=True)
        with_union_matched = with_negatives("train-union-matched", "union", learned, positives=True)

    weights = {"random": "random", "shipped": "default"}.get(args.backbone, str(work / "backbone.safetensors"))
    if args.backbone == "pretrain" and not (args.reuse and Path(weights).is_file()):
        pretrain(work / "train", weights, replace(PretrainConfig(), seed=seed), progress=False)
    config = ClassifierConfig(seed=seed, weights=weights)
    train(work / "train", taxonomy, work / "model", config, cv=0, progress=False)
    if every:
        train(work / "train-negatives", taxonomy, work / "model-negatives", config, cv=0, progress=False)
    # with train's grouped CV, as train's default, which chooses the defect threshold (max_false_alarms)
    train(work / "train-classical-matched", taxonomy, work / "model-classical-matched", config, cv=5, progress=False)
    if args.learned:
        if every:
            train(work / "train-learned-negatives", taxonomy, work / "model-learned", config, cv=0, progress=False, proposer=learned)
            train(work / "train-union-negatives", taxonomy, work / "model-union", config, cv=0, progress=False, proposer=learned)
        train(work / "train-learned-matched", taxonomy, work / "model-learned-matched", config, cv=5, progress=False, proposer=learned)
        train(work / "train-union-matched", taxonomy, work / "model-union-matched", config, cv=5, progress=False, proposer=learned)

    subtypes = [s for s in taxonomy.subtypes if s != BACKGROUND]
    runs = {
        "given (GT regions)": DefectClassifier.load(work / "model", create_proposer("given", source=src, format=fmt) if boxes else create_proposer("given")),
    }
    if every:
        runs.update({
            "classical": DefectClassifier.load(work / "model", create_proposer("classical")),
            "classical + hard negatives": DefectClassifier.load(work / "model-negatives", create_proposer("classical")),
            "classical + hn + matched, no threshold": DefectClassifier.load(work / "model-classical-matched", create_proposer("classical"),
                                                                            defect_threshold=0.0),
        })
    runs["classical + hn + matched"] = DefectClassifier.load(work / "model-classical-matched", create_proposer("classical"))
    if args.learned:
        if every:
            runs.update({
                "learned + hard negatives": DefectClassifier.load(work / "model-learned"),
                "learned+classical + hard negatives": DefectClassifier.load(work / "model-union", "union"),
            })
        runs.update({
            "learned + hn + matched": DefectClassifier.load(work / "model-learned-matched"),
            "learned+classical + hn + matched": DefectClassifier.load(work / "model-union-matched", "union"),
        })
    results = {name: score(clf, test_images, subtypes, boxes) for name, clf in runs.items()}

    n_free = sum(1 for t in test_images.values() if not t)
    added = {"classical": with_classical, "classical, matched": with_classical_matched}
    if args.learned:
        added.update({"learned": with_learned, "learned, matched": with_learned_matched, "learned+classical": with_union,
                      "learned+classical, matched": with_union_matched})
    added = {name: rows for name, rows in added.items() if rows}
    print(f"{args.dataset}, split seed {seed}: {len(test_images)} held-out images ({len(test_images) - n_free} defective, {n_free} defect-free); "
          f"{len(train_part)} training crops; added (hard negatives / matched proposals): "
          + ", ".join(f"{name} {sum(r['origin'] == 'negative' for r in rows)} / {sum(r['origin'] == 'proposal' for r in rows)}"
                      for name, rows in added.items()))
    print(f"matching: IoU >= {IOU} of {'boxes' if boxes else 'pixels'}; backbone: {args.backbone} ({config.weights})")
    header = f"{'':<28}" + "".join(f"{name:>36}" for name in results)
    print(header)
    for s in next(iter(results.values()))["per_class"]:
        cells = "".join(f"{'P %.2f R %.2f F1 %.2f' % r['per_class'][s][:3]:>36}" for r in results.values())
        print(f"{s + ' (n=%d)' % next(iter(results.values()))['per_class'][s][3]:<28}{cells}")
    for key, label in (("macro_f1", "subtype macro-F1"), ("image_accuracy", "image-level accuracy"),
                       ("fp_per_free_image", "false positives / free image"), ("images_per_second", "images / s")):
        print(f"{label:<28}" + "".join(f"{r[key]:>36.2f}" for r in results.values()))
    print(f"wall time {time.perf_counter() - started:.0f} s\n", flush=True)
    return results


def summarise(per_seed: list[dict], seeds: list[int]) -> None:
    """Mean and spread over the seeds of each column's macro-F1 and image accuracy, and the paired
    differences that decide extract's and train's defaults: matched proposals added or not, and
    train's defect threshold (``max_false_alarms``) or none."""
    print(f"over split seeds {seeds[0]}-{seeds[-1]} (mean ± sd):")
    print(f"{'':<40}{'subtype macro-F1':>20}{'image accuracy':>20}{'false / clean image':>22}")
    for name in per_seed[0]:
        cells = ""
        for key, width in (("macro_f1", 20), ("image_accuracy", 20), ("fp_per_free_image", 22)):
            values = np.array([r[name][key] for r in per_seed])
            cells += f"{'%.3f ± %.3f' % (values.mean(), values.std(ddof=1)):>{width}}"
        print(f"{name:<40}{cells}")
    for plain, matched in (("classical + hard negatives", "classical + hn + matched, no threshold"),
                           ("classical + hn + matched, no threshold", "classical + hn + matched"),
                           ("learned+classical + hard negatives", "learned+classical + hn + matched"),
                           ("classical + hn + matched", "learned + hn + matched")):
        if plain not in per_seed[0] or matched not in per_seed[0]:
            continue
        print(f"paired, {matched} minus {plain}:")
        for key, label in (("macro_f1", "macro-F1"), ("image_accuracy", "image accuracy"), ("fp_per_free_image", "false / clean image")):
            gain = np.array([r[matched][key] - r[plain][key] for r in per_seed])
            print(f"  {label}: {gain.mean():+.3f} ± {gain.std(ddof=1):.3f} (per seed: {', '.join(f'{g:+.3f}' for g in gain)})")


if __name__ == "__main__":
    main()
