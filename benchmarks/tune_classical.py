"""Tune the classical proposer on the TRAIN part of the magnetic-tile split (the held-out part is
for benchmarks/proposers.py only): coordinate search over a grid of each setting, maximising
mean (region recall + image recall) / 2 over the defect classes minus ``--fp-weight`` per
false positive on a defect-free image.

Each channel's regions are remembered per image and per setting of that channel's own options,
so a trial recomputes only the channel whose option it changes.

    .venv/bin/python benchmarks/tune_classical.py        # --rounds 2 --fp-weight 0.02 --max-fp 2.5

The shipped defaults are a fixed point of that command (no single change improves the score).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from proposers import CLASSES, DEFAULT_ROOT, evaluate, load, score, split

from defectkit.propose.classical import CHANNELS, ClassicalProposer

GRID = {
    "dark_window": [15, 21, 31, 45],
    "dark_blur": [0.0, 1.0, 1.5],
    "dark_threshold": [5.0, 6.0, 6.5, 7.0, 7.5, 9.0],
    "dark_grow": [2.0, 3.0, 4.0, 5.0],
    "dark_min_area": [15, 30, 45, 60],
    "dark_min_contrast": [0.0, 0.15, 0.2, 0.25],
    "large_polarity": ["off", "dark", "both"],
    "large_threshold": [3.0, 4.0, 5.0, 6.0],
    "large_grow": [1.5, 2.0, 2.5, 3.0],
    "large_min_fraction": [0.001, 0.002, 0.005],
    "large_min_contrast": [0.2, 0.25, 0.3, 0.35, 0.4],
    "edge_ratio": [None, 0.5, 0.55, 0.6, 0.65, 0.7],
    "edge_side": [96, 128, 192],
    "edge_window": [0.4, 0.6, 0.8],
    "edge_depth": [0.01, 0.02, 0.03, 0.05],
    "edge_reach": [0.2, 0.3, 0.4],
    "edge_min_contrast": [0.2, 0.25, 0.3, 0.35, 0.4],
    "smooth_threshold": [None, 2.5, 3.0, 3.5, 4.0],
    "smooth_grow": [1.0, 1.5, 2.0, 2.5],
    "smooth_reference": [50.0, 60.0, 70.0, 80.0],
    "smooth_min_fraction": [0.01, 0.02, 0.03],
    "band_threshold": [None, 3.0, 4.0, 5.0, 6.0, 8.0],
    "band_rows": [2, 3, 5],
    "band_min_fraction": [0.03, 0.05, 0.1],
    "band_sides": ["smaller", "both"],
    "max_fraction": [0.4, 0.5, 0.6, 0.75],
    "overlap": [0.3, 0.5, 0.7],
    "max_proposals": [4, 5, 6, 8, 10],
}


class MemoProposer(ClassicalProposer):
    """The classical proposer with each channel's regions remembered, per image path and per
    setting of the channel's own options (last few settings only), as bounding-box crops."""

    memo: dict[str, dict[tuple, dict[str, list]]] = {name: {} for name in CHANNELS}

    def channel(self, name, g, streaks):
        key = tuple((k, v) for k, v in self.config().items() if k.startswith(name + "_"))
        store = self.memo[name].setdefault(key, {})
        if len(self.memo[name]) > 3:  # forget the oldest setting
            self.memo[name].pop(next(iter(self.memo[name])))
        if self.image_path not in store:
            store[self.image_path] = [(s, _crop(m)) for s, m in super().channel(name, g, streaks)]
        return [(s, _uncrop(c, g.shape)) for s, c in store[self.image_path]]


def _crop(mask):
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return ys[0], xs[0], mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].copy()


def _uncrop(crop, shape):
    y, x, inside = crop
    mask = np.zeros(shape, dtype=bool)
    mask[y : y + inside.shape[0], x : x + inside.shape[1]] = inside
    return mask


def skipped(key: str, best: dict) -> bool:
    """Options of a channel that is switched off are not searched."""
    channel = key.split("_")[0]
    switch = {"large": "large_polarity", "edge": "edge_ratio", "smooth": "smooth_threshold", "band": "band_threshold"}.get(channel)
    if switch is None or key == switch:
        return False
    return best[switch] is None or best[switch] == "off"


def objective(result, args) -> float:
    """``score``, less one per false positive per defect-free image above ``--max-fp``."""
    over = result.tallies["Free"].row()["proposals_per_image"] - args.max_fp
    return score(result, args.fp_weight) - max(0.0, over)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--free", type=int, default=0, help="about this many defect-free images (0: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fp-weight", type=float, default=0.02)
    parser.add_argument("--max-fp", type=float, default=2.5, help="penalise false positives per defect-free image above this heavily")
    parser.add_argument("--only", nargs="*", help="search only these options (default: all of GRID)")
    args = parser.parse_args()
    parts = split(args.data, args.seed)
    free = parts["Free"]["train"]
    parts["Free"]["train"] = free[:: max(1, len(free) // args.free)] if args.free else free  # evenly spread
    items = load({cls: parts[cls]["train"] for cls in CLASSES})
    print(f"{len(items)} train images")
    best = dict(ClassicalProposer().config())
    best_score = objective(evaluate(MemoProposer(**best), items), args)
    print(f"start {best_score:.4f}")
    keys = args.only or list(GRID)
    for round_ in range(args.rounds):
        changed = False
        for key in keys:
            if skipped(key, best):
                continue
            for value in GRID[key]:
                if value == best[key]:
                    continue
                trial = {**best, key: value}
                start = time.perf_counter()
                result = evaluate(MemoProposer(**trial), items)
                s = objective(result, args)
                fp = result.tallies["Free"].row()["proposals_per_image"]
                print(f"round {round_} {key}={value}: {s:.4f} FP/img {fp:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
                if s > best_score + 1e-4:
                    best, best_score, changed = trial, s, True
                    print(f"  -> better: {best_score:.4f}", flush=True)
        if not changed:
            break
    print("best:", best, f"score {best_score:.4f}")


if __name__ == "__main__":
    main()
