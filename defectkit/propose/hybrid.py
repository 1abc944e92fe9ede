"""Another proposer's regions, refined by SAM2: each region becomes a box (and an interior point)
prompt, all answered in one batch against one image encoding.

Prompted SAM is close to supervised segmentation, while SAM2's prompt-free generator misses small,
low-contrast defects; so the candidates come from a detector that finds them (``classical`` by
default) and SAM2 only draws their outlines. A SAM2 mask that disagrees with its candidate (covers
too little of it, or spills far beyond its box) is replaced by the candidate itself.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from defectkit.geometry import connected_regions
from defectkit.propose.base import Proposer, Prompts
from defectkit.propose.sam2 import DEFAULT_CONFIG, SAM2Proposer


class HybridProposer(Proposer):
    name = "hybrid"
    accepts_prompts = True

    def __init__(
        self,
        source: str | Proposer = "classical",
        source_options: dict | None = None,
        sam2_config: str = DEFAULT_CONFIG,
        checkpoint: str | Path | None = None,
        sam2_mode: str = "prompted",
        device: str | None = None,
        random_weights: bool = False,
        box_margin: int = 3,
        point_prompts: bool = True,
        min_cover: float = 0.3,
        max_growth: float = 3.0,
        **sam2_options,
    ):
        super().__init__()
        from defectkit.propose import create_proposer

        self.source = create_proposer(source, **(source_options or {})) if isinstance(source, str) else source
        self.sam = SAM2Proposer(sam2_config, checkpoint, mode=sam2_mode, device=device, random_weights=random_weights, **sam2_options)
        self.box_margin = box_margin
        self.point_prompts = point_prompts
        self.min_cover = min_cover
        self.max_growth = max_growth
        self.refined = 0  # of the last image's candidates: outlined by SAM2 ...
        self.kept = 0  # ... or kept as the source drew them

    def config(self) -> dict:
        return {
            "source": self.source.describe(),
            "sam2": self.sam.config(),
            "box_margin": self.box_margin,
            "point_prompts": self.point_prompts,
            "min_cover": self.min_cover,
            "max_growth": self.max_growth,
        }

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        self.source.set_image(image, image_path)
        self.sam.set_image(image, image_path)

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        if prompts is not None:
            return self.sam.predict(prompts)
        shape = self.image.shape[:2]
        candidates = [r.full_mask(shape) for m in self.source.predict() for r in connected_regions(m)]
        self.refined = self.kept = 0
        if not candidates:
            return []
        prompts = Prompts.from_masks(candidates, margin=self.box_margin, points=self.point_prompts)
        answers = self.sam.predict(prompts)
        out = []
        for candidate, answer, box in zip(candidates, answers, prompts.boxes):
            mask = self._accept(candidate, answer, box)
            self.refined += mask is not None
            self.kept += mask is None
            out.append(candidate if mask is None else mask)
        return out

    def _accept(self, candidate: np.ndarray, answer: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """SAM2's answer, without parts that do not touch the candidate; None when it disagrees."""
        _, labels = cv2.connectedComponents(answer.astype(np.uint8), connectivity=8)
        touching = np.unique(labels[candidate & answer])
        if not len(touching):
            return None
        mask = np.isin(labels, touching)
        cover = (mask & candidate).sum() / candidate.sum()
        box_area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        if cover < self.min_cover or mask.sum() > self.max_growth * box_area:
            return None
        return mask
