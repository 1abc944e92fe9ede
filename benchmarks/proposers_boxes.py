"""How many boxed defects do the proposers find on a material labelled with boxes only (cr7-det,
cold-rolled steel, YOLO boxes), and how much else do they propose?

The images (``--images``, evenly over the file-name classes) are split by image content (byte-identical
twins stay together), each file-name class giving 30 % of its images to the test part. ``learned``
is trained here with `train-proposer`'s defaults (boxes as inscribed ellipses) on the training part
only, and kept in ``--work``; ``learned+classical`` is the union of both. On the test part, per
defect class: the share of boxes matched by a proposal whose box overlaps it at IoU >= 0.3 (one to
one), then proposals per image and those matching no box. The data set has no defect-free images
(the steel outside the boxes is clean), so false proposals are counted on every image.

    .venv/bin/python benchmarks/proposers_boxes.py -p classical -p learned -p learned+classical [--images 1200] [--seed 0 --seed 1] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections import Counter
from pathlib import Path

import numpy as np

from defectkit.data.split import split_records
from defectkit.geometry import connected_regions
from defectkit.matching import MATCH_IOU as IOU, one_to_one, region_iou
from defectkit.propose import create_proposer
from defectkit.segmenter.data import load_seg_data
from defectkit.taxonomy import Taxonomy
from proposers import learned_config, parse_setting, report_training

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "cr7-det"
TAXONOMY = ROOT / "configs" / "taxonomy" / "cr7-det.yaml"


def subset(root: Path, count: int) -> list[Path]:
    """``count`` images, evenly over the file-name classes (the name without its number)."""
    images = sorted((root / "image").glob("*.jpg"))
    by_class: dict[str, list[Path]] = {}
    for path in images:
        by_class.setdefault(path.stem.rstrip("0123456789"), []).append(path)
    share = max(1, count // len(by_class))
    return sorted(p for paths in by_class.values() for p in paths[:: max(1, len(paths) // share)][:share])


def linked(paths: list[Path], folder: Path) -> Path:
    """A data set folder of links to ``paths``, their label files and ``data.yaml`` (read fast)."""
    for sub in ("image", "label"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if not (folder / "data.yaml").exists():
        (folder / "data.yaml").symlink_to(DATA / "data.yaml")
    for path in paths:
        for source, target in ((path, folder / "image" / path.name), (DATA / "label" / f"{path.stem}.txt", folder / "label" / f"{path.stem}.txt")):
            if source.exists() and not target.exists():
                target.symlink_to(source)
    return folder


def split(paths: list[Path], seed: int) -> tuple[list[Path], list[Path]]:
    records = [{"image": str(p), "subtype": p.stem.rstrip("0123456789"), "image_sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
               for p in paths]
    train, test = split_records(records, 0.3, seed)
    return [Path(r["image"]) for r in train], [Path(r["image"]) for r in test]


def learned_model(root: Path, paths: list[Path], seed: int, work: Path, changes: dict | None = None) -> Path:
    """A proposer trained on the training part only, with ``train-proposer``'s defaults but for ``changes``."""
    from defectkit.jobs.train_proposer import train_proposer

    config, tag = learned_config(seed, changes or {})
    out = work / f"cr7-learned-{len(paths)}{tag}-seed{seed}"
    if not (out / "proposer.json").is_file():
        start = time.perf_counter()
        result = train_proposer(root, "yolo", Taxonomy.load(TAXONOMY), out, config, progress=False,
                                only=[root / "image" / p.name for p in paths])
        report_training("learned", seed, result, out, time.perf_counter() - start)
    return out


def build(name: str, model: Path | None):
    if name == "learned":
        return create_proposer("learned", model=model)
    if name == "learned+classical":
        return create_proposer("union", members=[create_proposer("learned", model=model), "classical"])
    return create_proposer(name)


def evaluate(proposer, items) -> dict:
    found, total, proposals, unmatched = Counter(), Counter(), 0, 0
    start = time.perf_counter()
    for item in items:
        masks = proposer.propose(item.image, image_path=str(item.path))
        regions = [r for m in masks for r in connected_regions(m, 1)]
        pairs = one_to_one(region_iou(item.regions, regions, boxes=True), IOU) if regions else []
        total.update(item.subtypes)
        found.update(item.subtypes[i] for i, _ in pairs)
        proposals += len(regions)
        unmatched += len(regions) - len(pairs)
    return {"recall": {s: found[s] / total[s] for s in sorted(total)}, "boxes": dict(total), "proposals": proposals / len(items),
            "unmatched": unmatched / len(items), "rate": len(items) / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--proposer", action="append", help="proposer name (repeatable); default classical")
    parser.add_argument("--images", type=int, default=1200, help="images used (evenly over the file-name classes)")
    parser.add_argument("--seed", type=int, action="append", help="split seed (repeatable; default 0)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/proposers"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a learned proposer setting other than the default (repeatable), as benchmarks/proposers.py --set")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    if not DATA.is_dir():
        raise SystemExit(f"no data set at {DATA}")
    names = args.proposer or ["classical"]
    changes = dict(parse_setting(s) for s in args.set)
    chosen = subset(DATA, args.images)
    root = linked(chosen, args.work / f"cr7-images-{args.images}")
    data = load_seg_data(root, "yolo", Taxonomy.load(TAXONOMY), progress=False)
    per_seed = []
    for seed in args.seed or [0]:
        per_seed.append(one_seed(args, names, changes, chosen, root, data, seed))
    if len(per_seed) > 1:
        print(f"\nmean (spread) over {len(per_seed)} seeds: mean box recall, proposals and boxless proposals per image")
        for n in names:
            recalls = [np.mean(list(r[n]["recall"].values())) for r in per_seed]
            print(f"{n}: mean box recall {np.mean(recalls):.3f} (+- {np.std(recalls):.3f}); "
                  + ", ".join(f"{s} {np.mean([r[n]['recall'][s] for r in per_seed]):.2f}" for s in sorted(per_seed[0][n]["recall"]))
                  + f"; proposals/image {np.mean([r[n]['proposals'] for r in per_seed]):.2f}, "
                  f"matching no box {np.mean([r[n]['unmatched'] for r in per_seed]):.2f}")


def one_seed(args, names: list[str], changes: dict, chosen: list[Path], root: Path, data, seed: int) -> dict:
    train, test = split(chosen, seed)
    model = learned_model(root, train, seed, args.work, changes) if any(n.startswith("learned") for n in names) else None
    wanted = {p.name for p in test}
    items = [i for i in data.images if i.path.name in wanted]
    print(f"cr7-det test part (seed {seed}): {len(items)} images of {len(train) + len(test)}, "
          f"{sum(len(i.regions) for i in items)} boxes\n")
    results = {name: evaluate(build(name, model), items) for name in names}
    subtypes = sorted(next(iter(results.values()))["boxes"])
    print(f"{'class (test boxes)':<28}" + "".join(f"{n:>20}" for n in names))
    for s in subtypes:
        print(f"{s + ' (' + str(results[names[0]]['boxes'][s]) + ')':<28}" + "".join(f"{results[n]['recall'][s]:>20.2f}" for n in names))
    rows = {"mean box recall": lambda r: np.mean(list(r["recall"].values())), "proposals per image": lambda r: r["proposals"],
            "matching no box, per image": lambda r: r["unmatched"], "images/s": lambda r: r["rate"]}
    for label, value in rows.items():
        print(f"{label:<28}" + "".join(f"{value(results[n]):>20.2f}" for n in names))
    print(f"\na box counts as found when a proposal's box overlaps it at IoU >= {IOU} (one to one)")
    return results


if __name__ == "__main__":
    main()
