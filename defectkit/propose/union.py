"""``union``: every region of several proposers, for one image (``members``: names or proposers).
A learned proposer and the classical one find different defects; together they miss fewer, and the
classifier, trained with their hard negatives, rejects what is not a defect."""

from __future__ import annotations

import numpy as np

from defectkit.propose.base import Proposer, Prompts


class UnionProposer(Proposer):
    name = "union"

    def __init__(self, members: list[str | Proposer] = ("learned", "classical"), member_options: dict | None = None):
        super().__init__()
        from defectkit.propose import create_proposer

        options = member_options or {}
        self.members = [create_proposer(m, **options.get(m, {})) if isinstance(m, str) else m for m in members]
        if not self.members:
            raise ValueError("union: give at least one member proposer")

    def config(self) -> dict:
        return {"members": [m.describe() for m in self.members]}

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        for member in self.members:
            member.set_image(image, image_path)

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        return [mask for member in self.members for mask in member.predict()]
