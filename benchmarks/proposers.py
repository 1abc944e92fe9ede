"""How many true defects do the mask proposers find, and how much else do they propose?

On the held-out part of a seeded split of the magnetic-tile data set (split by image, per class),
for each proposer named on the command line, side by side:

- region recall: ground-truth regions (8-connected, >= 10 px) matched by a proposal at IoU >= 0.3;
- image recall: defect images with at least one matched proposal;
- proposals per image, and on defect-free (MT_Free) images the false positives per image.

``learned`` is trained here (``defectkit train-proposer``'s defaults: an ImageNet encoder, 40 minutes) on the
training part of the same split only, once per seed, into ``--work`` (kept and reused; pass
``--retrain`` to train again); ``learned+classical`` is the union of both proposers' regions.
With several ``--seed``s, the mean over seeds is printed last.

    .venv/bin/python benchmarks/proposers.py                      # classical vs given
    .venv/bin/python benchmarks/proposers.py -p classical -p learned -p learned+classical --seed 0 --seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectkit.geometry import connected_regions
from defectkit.images import read_image, read_mask
from defectkit.matching import MATCH_IOU as IOU, iou_matrix
from defectkit.propose import Proposer, create_proposer

CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven", "Free")
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "magnetic-tile"
MIN_GT_AREA = 10


def split(root: Path, seed: int = 0, test_size: float = 0.3) -> dict[str, dict[str, list[Path]]]:
    """{class: {"train": [...], "test": [...]}}, split by image with ``defectkit.data.split`` (the
    rule and seed of ``defectkit split``: each class gives ``test_size`` of its images to test), over
    the images ``extract`` makes crops of, so that benchmarks/end_to_end.py splits the same way."""
    from defectkit.data.split import split_records

    records = []
    for name in CLASSES:
        images = sorted((root / f"MT_{name}" / "Imgs").glob("*.jpg"))
        if not images:
            raise SystemExit(f"no images in {root / f'MT_{name}' / 'Imgs'}; pass --data")
        if name != "Free":  # as `extract` does: a defect image whose mask is empty yields no crop
            images = [p for p in images if read_mask(p.with_suffix(".png")).any()]
        stratum = "background" if name == "Free" else name.lower()
        records += [{"image": str(p), "subtype": stratum, "class": name} for p in images]
    train, test = split_records(records, test_size, seed)
    return {
        name: {part: [Path(r["image"]) for r in rows if r["class"] == name] for part, rows in (("train", train), ("test", test))}
        for name in CLASSES
    }


@dataclass
class Item:
    cls: str
    path: Path
    image: np.ndarray
    regions: list[np.ndarray]  # full-size boolean masks of the ground-truth regions


def load(paths_by_class: dict[str, list[Path]]) -> list[Item]:
    items = []
    for cls, paths in paths_by_class.items():
        for path in paths:
            image = read_image(path)
            mask = read_mask(path.with_suffix(".png"))
            regions = [r.full_mask(mask.shape) for r in connected_regions(mask, MIN_GT_AREA)]
            items.append(Item(cls, path, image, regions))
    return items


@dataclass
class Tally:
    images: int = 0
    regions: int = 0
    regions_found: int = 0
    images_with_regions: int = 0
    images_found: int = 0
    proposals: int = 0
    unmatched: int = 0
    images_with_proposals: int = 0

    def row(self) -> dict[str, float]:
        return {
            "region_recall": self.regions_found / max(self.regions, 1),
            "image_recall": self.images_found / max(self.images_with_regions, 1),
            "proposals_per_image": self.proposals / max(self.images, 1),
            "unmatched_per_image": self.unmatched / max(self.images, 1),
            "flagged_share": self.images_with_proposals / max(self.images, 1),
        }


@dataclass
class Result:
    tallies: dict[str, Tally] = field(default_factory=dict)
    seconds: float = 0.0
    images: int = 0


def evaluate(proposer, items: list[Item]) -> Result:
    result = Result()
    start = time.perf_counter()
    for item in items:
        masks = proposer.propose(item.image, image_path=str(item.path))
        tally = result.tallies.setdefault(item.cls, Tally())
        ious = iou_matrix(item.regions, masks)
        matched = ious >= IOU
        tally.images += 1
        tally.regions += len(item.regions)
        tally.regions_found += int(matched.any(axis=1).sum()) if masks else 0
        tally.images_with_regions += bool(item.regions)
        tally.images_found += bool(item.regions) and bool(matched.any())
        tally.proposals += len(masks)
        tally.unmatched += int((~matched.any(axis=0)).sum()) if item.regions else len(masks)
        tally.images_with_proposals += bool(masks)
    result.seconds = time.perf_counter() - start
    result.images = len(items)
    return result


def score(result: Result, fp_weight: float = 0.05) -> float:
    """One number to tune on: mean region and image recall over the defect classes, minus
    ``fp_weight`` per false positive on a defect-free image."""
    defect = [result.tallies[c].row() for c in CLASSES if c != "Free" and c in result.tallies]
    recall = np.mean([(r["region_recall"] + r["image_recall"]) / 2 for r in defect])
    return float(recall - fp_weight * result.tallies["Free"].row()["proposals_per_image"])


def print_table(results: dict[str, Result]) -> None:
    names = list(results)
    width = max(14, *(len(n) + 2 for n in names))
    header = f"{'class':<10}{'images':>7}{'regions':>8}  " + "".join(
        f"{n + ' reg/img/ppi':>{width + 14}}" for n in names
    )
    print(header)
    first = results[names[0]]
    for cls in CLASSES:
        if cls not in first.tallies:
            continue
        t = first.tallies[cls]
        line = f"{cls:<10}{t.images:>7}{t.regions:>8}  "
        for name in names:
            row = results[name].tallies[cls].row()
            if cls == "Free":
                cell = f"FP/img {row['proposals_per_image']:.2f}, flagged {row['flagged_share']:.0%}"
            else:
                cell = f"{row['region_recall']:.2f} {row['image_recall']:.2f} {row['proposals_per_image']:.1f}"
            line += f"{cell:>{width + 14}}"
        print(line)
    print()
    for name in names:
        r = results[name]
        defect = [r.tallies[c].row() for c in CLASSES if c != "Free" and c in r.tallies]
        print(
            f"{name}: mean region recall {np.mean([d['region_recall'] for d in defect]):.2f}, "
            f"mean image recall {np.mean([d['image_recall'] for d in defect]):.2f}, "
            f"{r.images} images in {r.seconds:.1f} s ({r.images / max(r.seconds, 1e-9):.0f} img/s)"
        )
    print("reg = ground-truth regions matched (IoU >= 0.3); img = defect images with >= 1 match;"
          " ppi = proposals per image")


def learned_config(seed: int, changes: dict):
    """``train-proposer``'s defaults but for ``changes`` (settings of the network or of training),
    and a tag naming the changes (the folder a trained proposer is kept in)."""
    from dataclasses import replace

    from defectkit.segmenter.config import NetworkSpec
    from defectkit.segmenter.train import TrainProposerConfig

    tag = "".join(f"-{k}{v}" for k, v in sorted(changes.items()))
    network = {k: v for k, v in changes.items() if k in NetworkSpec.__dataclass_fields__}
    config = replace(TrainProposerConfig(seed=seed), **{k: v for k, v in changes.items() if k not in network},
                     network=NetworkSpec(**network))
    return config, tag


def report_training(name: str, seed: int, result, out: Path, seconds: float) -> None:
    checks = [f"{row['epoch']}: {row['val_region_f1']:.2f}" for row in json.loads((out / "proposer.json").read_text())["training"]["history"]
              if "val_region_f1" in row]
    print(f"{name} (seed {seed}): trained on {result.data['images']} training-part images in {seconds:.0f} s, "
          f"{result.epochs} epochs ({result.metrics.get('steps', '?')} steps); validation {result.metrics['validation']}; "
          f"validation region F1 by epoch: {', '.join(checks)}", flush=True)


def learned_model(root: Path, parts: dict, seed: int, work: Path, retrain: bool, changes: dict) -> Path:
    """A proposer trained on this seed's training part only, with the defaults but for ``changes``
    (trained once, kept in a folder named by the changes)."""
    from defectkit.jobs.train_proposer import train_proposer
    from defectkit.taxonomy import Taxonomy

    config, tag = learned_config(seed, changes)
    out = work / f"learned{tag}-seed{seed}"
    if retrain or not (out / "proposer.json").is_file():
        taxonomy = Taxonomy.load(Path(__file__).resolve().parents[1] / "configs" / "taxonomy" / "magnetic-tile.yaml")
        train_paths = [p for cls in CLASSES for p in parts[cls]["train"]]
        start = time.perf_counter()
        result = train_proposer(root, "masks", taxonomy, out, config, progress=False, only=train_paths)
        report_training("learned", seed, result, out, time.perf_counter() - start)
    return out


def reselected(model: Path, root: Path, parts: dict, seed: int, budget: float) -> dict:
    """The kept network's post-processing chosen again on its own validation part (the images
    train-proposer held out of the training part) for the most regions found within ``budget``
    false regions per clean image: the selection rule alone, without training again."""
    import torch

    from defectkit.segmenter.bundle import load_proposer
    from defectkit.segmenter.data import load_seg_data, split_seg_data
    from defectkit.segmenter.inference import probability_map
    from defectkit.segmenter.scoring import MIN_AREAS, choose_postprocess
    from defectkit.segmenter.train import validation_images
    from defectkit.taxonomy import Taxonomy

    bundle = load_proposer(model, torch.device("cpu"))
    trained = json.loads((model / "proposer.json").read_text())["training"]["config"]
    taxonomy = Taxonomy.load(Path(__file__).resolve().parents[1] / "configs" / "taxonomy" / "magnetic-tile.yaml")
    data = load_seg_data(root, "masks", taxonomy, trained["box_fill"], trained["min_area"], progress=False)
    wanted = {str(p) for cls in CLASSES for p in parts[cls]["train"]}
    _, val = split_seg_data([i for i in data.images if str(i.path) in wanted], trained["val_fraction"], trained["seed"])
    val = validation_images(val, limit_clean=False)
    maps = [probability_map(bundle.network, i.image, bundle.tile, bundle.overlap, torch.device("cpu"), bundle.scale) for i in val]
    post, result = choose_postprocess([(i.regions, i.boxes) for i in val], maps, tuple(sorted({trained["min_area"], *MIN_AREAS})), budget)
    print(f"learned, post-processing chosen again on its {len(val)} validation images for at most {budget} false regions per "
          f"clean image: {post.to_dict()} (as trained: {bundle.post.to_dict()}); validation {result.to_dict()}")
    return {"threshold": post.threshold, "seed_threshold": post.seed_threshold, "min_area": post.min_area}


def build(name: str, model: Path | None, post: dict | None = None, device: str | None = None) -> Proposer:
    if name == "learned":
        return create_proposer("learned", model=model, device=device, **(post or {}))
    if name == "learned+classical":
        return create_proposer("union", members=[create_proposer("learned", model=model, device=device, **(post or {})), "classical"])
    return create_proposer(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT, help="magnetic-tile folder (MT_*/Imgs)")
    parser.add_argument("-p", "--proposer", action="append", help="proposer name (repeatable); default classical and given")
    parser.add_argument("--seed", type=int, action="append", help="split seed (repeatable; default 0)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/proposers"), help="where learned proposers are trained and kept")
    parser.add_argument("--retrain", action="store_true", help="train the learned proposers again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a learned proposer setting other than the default (repeatable), e.g. input_scale=0.5, architecture=unet, epochs=40")
    parser.add_argument("--part", choices=("train", "test"), default="test")
    parser.add_argument("--free", type=int, default=0, help="use only this many defect-free images of the part (0: all)")
    parser.add_argument("--reselect", type=float, metavar="BUDGET",
                        help="choose the kept learned proposer's post-processing again on its validation images, for the most "
                             "regions found with at most BUDGET false regions per clean image (no training)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    names = args.proposer or ["classical", "given"]
    changes = dict(parse_setting(s) for s in args.set)
    per_seed = []
    for seed in args.seed or [0]:
        parts = split(args.data, seed)
        chosen = {cls: parts[cls][args.part] for cls in CLASSES}
        chosen["Free"] = chosen["Free"][: args.free or None]
        model = learned_model(args.data, parts, seed, args.work, args.retrain, changes) if any(n.startswith("learned") for n in names) else None
        start = time.perf_counter()
        items = load(chosen)
        print(f"magnetic-tile {args.part} part (seed {seed}): {len(items)} images loaded in "
              f"{time.perf_counter() - start:.1f} s\n")
        post = reselected(model, args.data, parts, seed, args.reselect) if model and args.reselect is not None else None
        results = {}
        for name in names:
            proposer = build(name, model, post)
            results[name] = evaluate(proposer, items)
            if name != "given":
                print(f"{name}: {proposer.describe()}")
        print()
        print_table(results)
        per_seed.append(results)
    if len(per_seed) > 1:
        print_mean(per_seed, names)


def parse_setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def print_mean(per_seed: list[dict], names: list[str]) -> None:
    print(f"\nmean (spread) over {len(per_seed)} seeds: region recall per class, mean region recall, false proposals per defect-free image")
    for name in names:
        cells, means = [], []
        for cls in CLASSES[:-1]:
            values = [r[name].tallies[cls].row()["region_recall"] for r in per_seed]
            cells.append(f"{cls.lower()} {np.mean(values):.2f}")
        for r in per_seed:
            means.append(np.mean([r[name].tallies[c].row()["region_recall"] for c in CLASSES[:-1]]))
        fp = [r[name].tallies["Free"].row()["proposals_per_image"] for r in per_seed]
        print(f"{name}: " + ", ".join(cells) + f"; mean {np.mean(means):.3f} (+- {np.std(means):.3f}); "
              f"false/clean image {np.mean(fp):.2f} (+- {np.std(fp):.2f})")


if __name__ == "__main__":
    main()
