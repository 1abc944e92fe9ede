"""Tune the classical proposer on the TRAIN part of the magnetic-tile split (the held-out part is
for benchmarks/proposers.py only): coordinate search over a grid of each setting, maximising
mean (region recall + image recall) / 2 over the defect classes minus ``--fp-weight`` per
false positive on a defect-free image.

    .venv/bin/python benchmarks/tune_classical.py --free 150 --rounds 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from proposers import CLASSES, DEFAULT_ROOT, evaluate, load, score, split

from defectkit.propose.classical import ClassicalProposer

GRID = {
    "dark_window": [15, 21, 31, 45],
    "dark_blur": [0.0, 1.0, 1.5],
    "dark_threshold": [5.0, 6.0, 7.5, 9.0, 11.0],
    "dark_grow": [2.0, 3.0, 4.0, 5.0],
    "dark_min_area": [15, 30, 45, 60],
    "band_threshold": [None, 8.0, 10.0, 12.0, 15.0, 20.0],
    "band_min_fraction": [0.05, 0.08, 0.12],
    "large_polarity": ["off", "dark", "bright", "both"],
    "large_threshold": [2.5, 3.5, 4.5],
    "large_min_fraction": [0.005, 0.01, 0.02],
    "max_proposals": [2, 3, 4, 5, 8],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--free", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fp-weight", type=float, default=0.05)
    args = parser.parse_args()
    parts = split(args.data, args.seed)
    items = load({cls: parts[cls]["train"][: args.free if cls == "Free" else None] for cls in CLASSES})
    print(f"{len(items)} train images")
    best = dict(ClassicalProposer().config())
    best_score = score(evaluate(ClassicalProposer(**best), items), args.fp_weight)
    print(f"start {best_score:.4f}")
    for round_ in range(args.rounds):
        changed = False
        for key, values in GRID.items():
            if key.startswith("large_") and key != "large_polarity" and best["large_polarity"] == "off":
                continue
            if key.startswith("band_") and key != "band_threshold" and best["band_threshold"] is None:
                continue
            for value in values:
                if value == best[key]:
                    continue
                trial = {**best, key: value}
                start = time.perf_counter()
                result = evaluate(ClassicalProposer(**trial), items)
                s = score(result, args.fp_weight)
                print(f"round {round_} {key}={value}: {s:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
                if s > best_score + 1e-4:
                    best, best_score, changed = trial, s, True
                    print(f"  -> better: {best_score:.4f}", flush=True)
        if not changed:
            break
    print("best:", best, f"score {best_score:.4f}")


if __name__ == "__main__":
    main()
