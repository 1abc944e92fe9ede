"""The learned proposer on a lent GPU: train it within a budget, score it on held-out images, time classify.

Two steps (``benchmarks/gpu_check.sh`` runs them):

``prepare`` (here, where ``../shared`` is): writes ``.gpu/`` (git-ignored), what the device machine
needs and lacks, about 40 MiB:

- ``data/``: magnetic tile, split as ``benchmarks/proposers.py`` splits it (seed 0): every defect image
  with its mask, and some defect-free images of each part (``--free-train``, ``--free-test``);
  ``split.json`` names the parts;
- ``encoder.safetensors``: the packaged ImageNet weights of the proposer's encoder, mapped onto timm's
  names (through ``defectkit.pretrained``, its hash checked) and stored as float16;
- ``whl/``: wheels for Python 3.12 of the packages its image lacks.

``run`` (there): trains ``train-proposer``'s default network with ``--device cuda --max-minutes M``,
scores region recall per class and false regions per clean image on the held-out part (learned,
classical and both), and times ``classify`` with the shipped model on the GPU, then prints one table.

    .venv/bin/python benchmarks/gpu_check.py prepare
    python3 benchmarks/gpu_check.py run --minutes 4          # on the device machine
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / ".gpu"
sys.path.insert(0, str(ROOT / "benchmarks"))

WHEELS = ["segmentation-models-pytorch==0.6.0", "xgboost-cpu==3.2.0", "skops==0.16.0", "prettytable==3.16.0", "pycocotools==2.0.11"]


def prepare(args) -> None:
    from proposers import CLASSES, DEFAULT_ROOT, split

    from defectkit.pretrained import imagenet_state
    from defectkit.segmenter.config import NetworkSpec

    if GPU.exists():
        shutil.rmtree(GPU)
    parts = split(args.data or DEFAULT_ROOT, 0)
    chosen = {"train": [], "test": []}
    for cls in CLASSES:
        for part, limit in (("train", args.free_train), ("test", args.free_test)):
            paths = parts[cls][part][:limit] if cls == "Free" else parts[cls][part]
            for path in paths:
                target = GPU / "data" / path.parent.parent.name / "Imgs" / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                shutil.copyfile(path.with_suffix(".png"), target.with_suffix(".png"))
                chosen[part].append(str(target.relative_to(GPU / "data")))
    (GPU / "split.json").write_text(json.dumps(chosen, indent=1))
    import torch
    from safetensors.torch import save_file

    encoder = NetworkSpec().encoder
    state = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in imagenet_state(encoder).items()
             if not k.startswith("classifier.")}  # the encoder has no ImageNet head
    save_file(state, str(GPU / "encoder.safetensors"))
    (GPU / "encoder.json").write_text(json.dumps({"backbone": encoder, "source": "defectkit.pretrained, float16"}))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", str(GPU / "whl"), *WHEELS], check=True)
    size = sum(p.stat().st_size for p in GPU.rglob("*") if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((ROOT / p).stat().st_size for p in tracked if p and (ROOT / p).is_file())
    print(f"{GPU}: {len(chosen['train'])} training and {len(chosen['test'])} held-out images, the encoder ({torch.__version__} "
          f"wrote it) and {len(list((GPU / 'whl').iterdir()))} wheels, {size / 2**20:.1f} MiB; with the working tree "
          f"{(size + tree) / 2**20:.1f} MiB of the device's 64 MiB" + ("  TOO LARGE: lower --free-train/--free-test" if size + tree > 62 * 2**20 else ""))


def run(args) -> None:
    import numpy as np
    import torch

    from defectkit.jobs.train_proposer import train_proposer
    from defectkit.pipeline import DefectClassifier
    from defectkit.segmenter.config import TrainProposerConfig
    from defectkit.taxonomy import Taxonomy
    from proposers import CLASSES, build, evaluate, load

    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = GPU / "data"
    chosen = json.loads((GPU / "split.json").read_text())
    test = {cls: [data / p for p in chosen["test"] if p.startswith(f"MT_{cls}/")] for cls in CLASSES}
    config = TrainProposerConfig(max_minutes=args.minutes, epochs=10_000, encoder_weights=str(GPU / "encoder.safetensors"))
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    taxonomy = Taxonomy.load(ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml")
    out = Path(args.out) / "proposer"
    result = train_proposer(data, "masks", taxonomy, out, config, device=device, progress=False,
                            only=[data / p for p in chosen["train"]], workers=args.workers)
    trained = time.perf_counter() - started
    print(f"trained {result.metrics['steps']} steps ({result.epochs} epochs of {config.steps_per_epoch}) in {trained:.0f} s; "
          f"validation {result.metrics['validation']}", flush=True)
    items = load(test)
    results = {}
    for name in ("learned", "classical", "learned+classical"):
        results[name] = evaluate(build(name, out, device=device if name != "classical" else None), items)
    clf = DefectClassifier.load(ROOT / "models" / "magnetic-tile", device=device)
    paths = [i.path for i in items]
    list(clf.classify_batch(paths[:16]))  # warm-up
    timed = time.perf_counter()
    count = sum(1 for _ in clf.classify_batch(paths))
    rate = count / (time.perf_counter() - timed)
    print("\n| held-out regions (seed 0) | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for cls in CLASSES[:-1]:
        tally = results["learned"].tallies[cls]
        print(f"| {cls.lower()} ({tally.regions}) | " + " | ".join(f"{r.tallies[cls].row()['region_recall']:.2f}" for r in results.values()) + " |")
    means = [np.mean([r.tallies[c].row()["region_recall"] for c in CLASSES[:-1]]) for r in results.values()]
    print("| mean region recall | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    print("| false regions / clean image | " + " | ".join(f"{r.tallies['Free'].row()['proposals_per_image']:.2f}" for r in results.values()) + " |")
    print("| proposer images/s | " + " | ".join(f"{r.images / r.seconds:.0f}" for r in results.values()) + " |")
    print(f"\ntraining: {result.metrics['steps']} steps in {trained:.0f} s on {device} ({config.max_minutes} minute budget), "
          f"{len(chosen['train'])} training-part images; classify with the shipped model on {device}: {rate:.1f} images/s "
          f"({count} held-out images); total {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    first = sub.add_parser("prepare", help="write .gpu/ here")
    first.add_argument("--data", type=Path, help="magnetic-tile folder (default ../shared/datasets/magnetic-tile)")
    first.add_argument("--free-train", type=int, default=150, help="defect-free images of the training part to carry")
    first.add_argument("--free-test", type=int, default=100, help="defect-free images of the held-out part to carry")
    second = sub.add_parser("run", help="train, score and time on the device")
    second.add_argument("--minutes", type=float, default=4.0, help="train-proposer --max-minutes")
    second.add_argument("--workers", type=int, default=None, help="crop-sampling processes (default: up to 8 on a GPU)")
    second.add_argument("--out", default="/tmp/gpu-check", help="where the proposer is written")
    args = parser.parse_args()
    prepare(args) if args.step == "prepare" else run(args)


if __name__ == "__main__":
    main()
