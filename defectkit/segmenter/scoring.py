"""How well found regions match the true ones, and the post-processing that matches them best.

A true region counts as found when a proposal overlaps it at IoU >= 0.3 (of pixels; of boxes where
the truth is a box); a proposal that matches no true region is a false proposal. The post-processing
is chosen for the most regions found within a budget of false proposals per defect-free image (the
classifier's background class rejects most of what remains); ties go to region F1. Without clean
images to count on, region F1 decides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from defectkit.geometry import Region
from defectkit.matching import MATCH_IOU as IOU, one_to_one, region_iou
from defectkit.segmenter.inference import Postprocess, components, keep

THRESHOLDS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SEED_THRESHOLDS = (0.5, 0.7, 0.8, 0.9)
MIN_AREAS = (10, 25, 50, 100)


@dataclass
class RegionScore:
    regions: int = 0
    found: int = 0
    proposals: int = 0
    false: int = 0
    clean_images: int = 0
    clean_false: int = 0

    def add(self, iou: np.ndarray) -> None:
        """One image: the IoU of its true regions (rows) with its proposals (columns)."""
        truths, proposals = iou.shape
        pairs = len(one_to_one(iou, IOU)) if truths and proposals else 0
        self.regions += truths
        self.found += pairs
        self.proposals += proposals
        self.false += proposals - pairs
        if not truths:
            self.clean_images += 1
            self.clean_false += proposals

    @property
    def recall(self) -> float:
        return self.found / self.regions if self.regions else 0.0

    @property
    def precision(self) -> float:
        return (self.proposals - self.false) / self.proposals if self.proposals else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_per_clean(self) -> float | None:
        return self.clean_false / self.clean_images if self.clean_images else None

    def rank(self, max_false_per_clean: float) -> tuple:
        """Larger is better: within the budget, recall then F1; over it, the fewest false proposals."""
        fpc = self.false_per_clean
        if fpc is None:
            return (1, round(self.f1, 6), self.recall)
        if fpc <= max_false_per_clean:
            return (1, round(self.recall, 6), round(self.f1, 6))
        return (0, -fpc, self.recall)

    def to_dict(self) -> dict:
        return {
            "region_recall": round(self.recall, 4),
            "region_precision": round(self.precision, 4),
            "region_f1": round(self.f1, 4),
            "false_per_clean_image": None if self.false_per_clean is None else round(self.false_per_clean, 4),
            "regions": self.regions,
            "images_clean": self.clean_images,
        }


def score(truths: list[tuple[list[Region], bool]], probabilities: list[np.ndarray], post: Postprocess) -> RegionScore:
    """``truths``: per image its true regions and whether they are boxes."""
    result = RegionScore()
    for (truth, boxes), probability in zip(truths, probabilities):
        result.add(region_iou(truth, keep(*components(probability, post.threshold), post), boxes))
    return result


def choose_postprocess(truths: list[tuple[list[Region], bool]], probabilities: list[np.ndarray],
                       min_areas: tuple[int, ...] = MIN_AREAS, max_false_per_clean: float = 0.4) -> tuple[Postprocess, RegionScore]:
    """The threshold, seed threshold and minimum area that rank best (``RegionScore.rank``)."""
    best: tuple[tuple[float, float], Postprocess, RegionScore] | None = None
    for threshold in THRESHOLDS:
        # components once per threshold; the seed and area rules only filter them
        found = [components(p, threshold) for p in probabilities]
        ious = [region_iou(truth, regions, boxes) for (truth, boxes), (regions, _) in zip(truths, found)]
        seeds = sorted({threshold, *(s for s in SEED_THRESHOLDS if s > threshold)})
        for seed, min_area in itertools.product(seeds, min_areas):
            post = Postprocess(threshold, seed, min_area)
            result = RegionScore()
            for (regions, peaks), iou in zip(found, ious):
                kept = [k for k, (r, peak) in enumerate(zip(regions, peaks)) if peak >= seed and r.area >= min_area]
                result.add(iou[:, kept])
            key = result.rank(max_false_per_clean)
            if best is None or key > best[0]:
                best = (key, post, result)
    return best[1], best[2]
