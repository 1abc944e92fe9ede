"""``auto``: the best proposer this machine and this model have.

The source of the regions is the proposer the model's training crops were extracted with
(``extract --negatives-from``, recorded in the bundle as ``trained_with``): ``learned``, ``union``
(learned + classical) or ``classical``. The classifier learned to reject that proposer's false
regions and to name its outlines of real defects, so it is the one it classifies best; which one a
recipe extracts with is chosen by measurement end to end (``benchmarks/end_to_end.py``). Without that
record, the learned proposer when there is one, else the classical one. Where a SAM2 checkpoint is
found, SAM2 refines the source's regions (they become its prompts).

The choice and its reason are recorded in ``describe()`` (and so in every result file), and
``classify`` prints them when it starts."""

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
    learned: str | Path | None = None,
    trained_with: str | None = None,
    **options,
) -> AutoProposer:
    """The choice above. ``learned`` is a proposer bundle (a model bundle's own, or
    ``--proposer-model``); ``trained_with`` the name of the proposer the model's crops were
    extracted with; ``options`` go to SAM2 refinement. A ``checkpoint`` that was asked for but does
    not exist is an error, not a silent fallback."""
    from defectkit.propose.classical import ClassicalProposer
    from defectkit.propose.hybrid import HybridProposer
    from defectkit.propose.learned import LearnedProposer
    from defectkit.propose.union import UnionProposer

    stem, model_yaml, yaml_checkpoint, _ = resolve_config(sam2_config)
    found = find_checkpoint(stem, checkpoint or yaml_checkpoint)
    if found is None and checkpoint:
        raise missing_checkpoint_error(stem, checkpoint)
    if not learned:
        source, source_reason = ClassicalProposer(), "no learned proposer (train one with `defectkit train-proposer`)"
    elif trained_with == "classical":
        source, source_reason = ClassicalProposer(), "the model's crops were extracted with the classical proposer"
    else:
        network = LearnedProposer(learned, device=device)
        source_reason = f"learned proposer {learned}{_quality(network)}"
        if trained_with == "union":
            source = UnionProposer([network, ClassicalProposer()])
            source_reason = f"the model's crops were extracted with the union of the {source_reason} and the classical proposer"
        else:
            source = network
    if found is None:
        where = " or ".join(str(d) for d in checkpoint_dirs())
        return AutoProposer(source, f"{source_reason}; no SAM2 checkpoint ({expected_checkpoint(stem)} not in {where})")
    hybrid = HybridProposer(source=source, sam2_config=sam2_config, checkpoint=found, device=device, **options)
    return AutoProposer(hybrid, f"{source_reason}, refined by SAM2 checkpoint {found}")


def _quality(learned) -> str:
    """What the learned proposer scored on its held-out images when it was trained."""
    held_out = learned.bundle.manifest.get("metrics", {}).get("validation") or {}
    if "region_recall" not in held_out:
        return ""
    return (f" (held out when trained: region recall {held_out['region_recall']:.2f}, "
            f"{held_out.get('false_per_clean_image') or 0:.2f} false regions per clean image)")
