"""``learned``: the segmentation network trained by ``defectkit train-proposer`` on the user's own
masks or boxes. ``set_image`` runs the network once (tiled on large images) and keeps the
probability map; ``predict`` turns it into regions with the bundle's post-processing (threshold,
hysteresis seed, minimum area, chosen on the validation part when the proposer was trained)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defectkit.devices import pick_device
from defectkit.propose.base import Proposer, Prompts
from defectkit.segmenter.bundle import WEIGHTS, load_proposer
from defectkit.segmenter.inference import Postprocess, probability_map, regions_from_probability


class LearnedProposer(Proposer):
    name = "learned"

    def __init__(self, model: str | Path, device: str | None = None, threshold: float | None = None,
                 seed_threshold: float | None = None, min_area: int | None = None):
        super().__init__()
        self.device = pick_device(device)
        self.bundle = load_proposer(model, self.device)
        post = self.bundle.post
        self.post = Postprocess(
            post.threshold if threshold is None else float(threshold),
            post.seed_threshold if seed_threshold is None else float(seed_threshold),
            post.min_area if min_area is None else int(min_area),
        )
        self.probability: np.ndarray | None = None

    def config(self) -> dict:
        return {
            "model": str(self.bundle.path),
            "weights_sha256": self.bundle.manifest["files"][WEIGHTS],
            "network": self.bundle.spec.to_dict(),
            "input_scale": self.bundle.scale,
            "postprocess": self.post.to_dict(),
        }

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        self.probability = probability_map(self.bundle.network, image, self.bundle.tile, self.bundle.overlap, self.device,
                                           self.bundle.scale)

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        shape = self.image.shape[:2]
        return [r.full_mask(shape) for r in regions_from_probability(self.probability, self.post)]
