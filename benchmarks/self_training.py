"""Does self-training on unlabelled images help when few crops are labelled? (`train --unlabelled`)

Protocol: the data set is extracted once (classical hard negatives, as `extract` does by default)
and split by source image into a fixed training and test part (seed 0, 30 % test). For each
labelled share and each seed, that share of the training part's images (at least 3 per stratum) is
labelled; the rest of the training part's images are given as unlabelled image files. Three arms,
each with `train`'s defaults (the same tuning budget: the feature set chosen by 3-fold grouped CV):

- labelled only: `train` on the labelled share (it is self-training's own round 0);
- self-trained: `train --unlabelled` with the rest (default rounds, pseudo-label precision and cap;
  `--per-labelled none` lifts the cap);
- all labels: `train` on the whole training part.

Each is scored on the test part's crops (defect-subtype macro-F1). Printed: mean and sd over the
seeds, the paired difference self-trained minus labelled-only with a bootstrap 95 % interval (over
the seeds' paired differences), and the pseudo-labels' own accuracy per class (a pseudo-label is
right when the region it names overlaps a true region of that subtype at box IoU >= 0.3, or no true
region when it says background).

    .venv/bin/python benchmarks/self_training.py [--dataset magnetic-tile] [--shares 0.1] [--seeds 5]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from defectkit.classifier import ClassifierConfig
from defectkit.data.manifest import read_manifest, settings_path, write_manifest
from defectkit.data.split import image_strata, source_of, split_records
from defectkit.embed import EmbeddingCache
from defectkit.matching import MATCH_IOU as IOU
from defectkit.jobs.evaluate import evaluate_bundle
from defectkit.jobs.extract import ExtractOptions, extract
from defectkit.jobs.self_train import SelfTrainOptions, self_train
from defectkit.jobs.train import train
from defectkit.taxonomy import BACKGROUND, Taxonomy
from defectkit.threads import use_one_thread

from classifier_materials import DATASETS  # noqa: E402 (a sibling benchmark)

CV = 3


def write_part(folder: Path, records: list[dict], settings: Path) -> Path:
    write_manifest(folder / "manifest.jsonl", records)
    (folder / "extract.json").write_bytes(settings.read_bytes())
    return folder


def labelled_share(records: list[dict], share: float, seed: int) -> set[str]:
    """The source images to label: ``share`` of each stratum's images, at least 3 (all when fewer):
    the labelled CV that sets the pseudo-label bars needs 2 crops of a class in every training part."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for image, stratum in sorted(image_strata(records).items()):
        by_stratum[stratum].append(image)
    chosen: set[str] = set()
    for images in by_stratum.values():
        count = min(len(images), max(3, int(round(share * len(images)))))
        chosen.update(images[i] for i in rng.permutation(len(images))[:count])
    return chosen


def box_iou(a: list[int], b: list[int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter) if inter else 0.0


def pseudo_accuracy(pseudo: list[dict], truth: dict[str, list[dict]]) -> dict[str, tuple[int, int]]:
    """Per pseudo-label class: (right, all)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in pseudo:
        regions = truth.get(str(Path(record["image"]).resolve()), [])
        hits = [t["subtype"] for t in regions if box_iou(t["bbox"], record["bbox"]) >= IOU]
        right = record["subtype"] in hits if record["subtype"] != BACKGROUND else not hits
        out[record["subtype"]][0] += int(right)
        out[record["subtype"]][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def macro_f1(bundle: Path, test: Path, cache) -> float:
    return float(evaluate_bundle(test, bundle, cache, progress=False)["subtype"]["macro_f1"])


def bootstrap(differences: list[float], rounds: int = 10_000, seed: int = 0) -> tuple[float, float]:
    values = np.asarray(differences)
    means = np.random.default_rng(seed).choice(values, (rounds, len(values))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="magnetic-tile")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/self-training"))
    parser.add_argument("--per-labelled", default=str(SelfTrainOptions().per_labelled),
                        help="pseudo-labels of a class per labelled crop of it, at most ('none': no cap)")
    args = parser.parse_args()
    use_one_thread()
    src, format, taxonomy_file = DATASETS[args.dataset]
    taxonomy = Taxonomy.load(taxonomy_file)
    work = args.work / args.dataset
    crops = work / "crops"
    if not (crops / "manifest.jsonl").is_file():
        extract(src, crops, taxonomy, ExtractOptions(format=format, negatives_from="classical"), progress=True)
    records = read_manifest(crops)
    settings = settings_path(crops)
    train_part, test_part = split_records(records, 0.3, 0)
    test = write_part(work / "test", test_part, settings)
    image_of = {source_of(r): str(Path(r["image"]).resolve()) for r in train_part}
    truth: dict[str, list[dict]] = defaultdict(list)
    for r in train_part:
        if r["subtype"] != BACKGROUND and r.get("origin") != "negative":
            truth[image_of[source_of(r)]].append(r)
    cache = EmbeddingCache(work / "cache")
    started = time.perf_counter()

    scores: dict[tuple[float, str], list[float]] = defaultdict(list)
    everything = []
    accuracy: dict[float, Counter] = defaultdict(Counter)
    for seed in range(args.seeds):
        config = ClassifierConfig(seed=seed)
        full = train(write_part(work / "train", train_part, settings), taxonomy, work / f"all-{seed}", config, CV, cache,
                     progress=False, choose_features=True)
        everything.append(macro_f1(full.bundle, test, cache))
        for share in args.shares:
            chosen = labelled_share(train_part, share, seed)
            labelled = write_part(work / f"labelled-{share}-{seed}", [r for r in train_part if source_of(r) in chosen], settings)
            unlabelled = sorted({Path(image_of[s]) for s in image_of if s not in chosen})
            out = work / f"self-{share}-{seed}"
            options = SelfTrainOptions(per_labelled=None if args.per_labelled == "none" else float(args.per_labelled))
            self_train(labelled, unlabelled, taxonomy, out, config, CV, cache, progress=False, options=options,
                       choose_features=True)
            rounds = Path(str(out) + ".self-training")
            scores[(share, "labelled only")].append(macro_f1(rounds / "round-0" / "model", test, cache))
            scores[(share, "self-trained")].append(macro_f1(out, test, cache))
            last = max(rounds.glob("round-*"), key=lambda p: int(p.name.split("-")[1]))
            pseudo = [r for r in read_manifest(last) if r.get("origin") == "pseudo"]
            for subtype, (right, count) in pseudo_accuracy(pseudo, truth).items():
                accuracy[share][(subtype, "right")] += right
                accuracy[share][(subtype, "all")] += count
            print(f"seed {seed}, {share:.0%} labelled ({len(chosen)} images, {len(unlabelled)} unlabelled): labelled only "
                  f"{scores[(share, 'labelled only')][-1]:.3f}, self-trained {scores[(share, 'self-trained')][-1]:.3f}, "
                  f"all labels {everything[-1]:.3f}, {len(pseudo)} pseudo-labels", flush=True)

    print(f"\n{args.dataset}: test part {len(test_part)} crops from {len({source_of(r) for r in test_part})} images (fixed, seed 0); "
          f"seeds 0..{args.seeds - 1}; defect-subtype macro-F1 on the test part")
    print(f"all labels ({len(image_of)} training images): {np.mean(everything):.3f} +- {np.std(everything):.3f}")
    for share in args.shares:
        alone, selftrained = scores[(share, "labelled only")], scores[(share, "self-trained")]
        differences = list(np.subtract(selftrained, alone))
        low, high = bootstrap(differences)
        print(f"{share:.0%} labelled: labelled only {np.mean(alone):.3f} +- {np.std(alone):.3f}, self-trained "
              f"{np.mean(selftrained):.3f} +- {np.std(selftrained):.3f}; paired difference {np.mean(differences):+.3f} "
              f"(95 % bootstrap interval {low:+.3f} to {high:+.3f})")
        per_class = ", ".join(f"{s} {accuracy[share][(s, 'right')] / accuracy[share][(s, 'all')]:.2f} (n={accuracy[share][(s, 'all')]})"
                              for s in sorted({k[0] for k in accuracy[share]}))
        print(f"  pseudo-label accuracy, last round, all seeds: {per_class}")
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
