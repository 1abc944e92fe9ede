"""Ground-truth regions as proposals: masks or boxes from annotations, so the rest of the pipeline
can be run (and measured) on what a person marked instead of on what a proposer found."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defectkit.data import FORMATS, read_dataset
from defectkit.data.masks import MASK_SUFFIX
from defectkit.errors import DefectkitError, InputError
from defectkit.geometry import Region, connected_regions
from defectkit.images import read_mask
from defectkit.propose.base import Proposer, Prompts


class GivenProposer(Proposer):
    """One mask per connected region of each annotation of the image.

    Without ``source``, the mask beside the image (``<name>_mask.png``, or ``<name>.png`` beside
    ``<name>.jpg``). With ``source`` a data set in one of ``defectkit.data.FORMATS`` (``masks``,
    ``voc`` boxes, ``coco``), the image's annotations there, looked up by path and then by file name.
    """

    name = "given"

    def __init__(self, source: str | Path | None = None, format: str = "masks", mask_threshold: int = 127, min_area: int = 1):
        super().__init__()
        if format not in FORMATS:
            raise DefectkitError(f"given proposer: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        self.source = None if source is None else str(source)
        self.format = format
        self.mask_threshold = mask_threshold
        self.min_area = min_area
        self._index = None
        self._masks: list[np.ndarray] = []

    def config(self) -> dict:
        return {"source": self.source or "mask beside each image", "format": self.format, "mask_threshold": self.mask_threshold}

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        if image_path is None:
            raise DefectkitError("the given proposer needs the image's path to find its annotation")
        shape = image.shape[:2]
        masks = []
        for annotation_mask in self._annotation_masks(Path(image_path), shape):
            masks += [r.full_mask(shape) for r in connected_regions(annotation_mask, self.min_area)]
        self._masks = masks

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        return [m.copy() for m in self._masks]

    def _annotation_masks(self, image_path: Path, shape: tuple[int, int]) -> list[np.ndarray]:
        if self.source is None:
            mask_path = _mask_beside(image_path)
            if mask_path is None:
                raise InputError(image_path, f"no annotation mask beside it ({image_path.stem}{MASK_SUFFIX}.png or {image_path.stem}.png)")
            mask = read_mask(mask_path, self.mask_threshold)
            if mask.shape != shape:
                raise InputError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]}, its image is {shape[1]}x{shape[0]}")
            return [mask]
        sample = self._lookup(image_path)
        _, annotations = sample.load()
        return [
            a.mask if a.mask is not None else Region.from_polygon(a.polygon, shape).full_mask(shape)
            for a in annotations
        ]

    def _lookup(self, image_path: Path):
        if self._index is None:
            self._index = {}
            for sample in read_dataset(self.source, self.format, self.mask_threshold):
                self._index[str(Path(sample.image_path).resolve())] = sample
                self._index.setdefault(Path(sample.image_path).name, sample)
        sample = self._index.get(str(image_path.resolve())) or self._index.get(image_path.name)
        if sample is None:
            raise InputError(image_path, f"has no annotation in {self.source} ({self.format})")
        return sample


def _mask_beside(image_path: Path) -> Path | None:
    candidates = [image_path.with_name(image_path.stem + MASK_SUFFIX + ".png")]
    if image_path.suffix.lower() != ".png":
        candidates.append(image_path.with_suffix(".png"))
    return next((c for c in candidates if c.is_file()), None)
