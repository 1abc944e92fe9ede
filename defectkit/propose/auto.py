"""``auto``: the hybrid proposer when a SAM2 checkpoint is found, else the classical one; the
choice and its reason are recorded in ``describe()`` (and so in every result file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defectkit.propose.base import Proposer, Prompts
from defectkit.propose.sam2 import DEFAULT_CONFIG, checkpoint_dirs, expected_checkpoint, find_checkpoint, missing_checkpoint_error, resolve_config


class AutoProposer(Proposer):
    name = "auto"

    def __init__(self, chosen: Proposer, reason: str):
        super().__init__()
        self.chosen, self.reason = chosen, reason
        self.accepts_prompts = chosen.accepts_prompts

    def config(self) -> dict:
        return {"chose": self.chosen.describe(), "because": self.reason}

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        self.chosen.set_image(image, image_path)

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        return self.chosen.predict(prompts)


def auto_proposer(
    sam2_config: str = DEFAULT_CONFIG,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    **options,
) -> AutoProposer:
    """Hybrid (with ``options``) when a checkpoint for ``sam2_config`` is found, else classical.
    A ``checkpoint`` that was asked for but does not exist is an error, not a silent fallback."""
    from defectkit.propose.classical import ClassicalProposer
    from defectkit.propose.hybrid import HybridProposer

    stem, model_yaml, yaml_checkpoint, _ = resolve_config(sam2_config)
    found = find_checkpoint(stem, checkpoint or yaml_checkpoint)
    if found is None and checkpoint:
        raise missing_checkpoint_error(stem, checkpoint)
    if found is None:
        where = " or ".join(str(d) for d in checkpoint_dirs())
        return AutoProposer(ClassicalProposer(), f"no SAM2 checkpoint ({expected_checkpoint(stem)} not in {where})")
    hybrid = HybridProposer(sam2_config=sam2_config, checkpoint=found, device=device, **options)
    return AutoProposer(hybrid, f"SAM2 checkpoint {found} found")
