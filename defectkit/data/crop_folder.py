"""Existing crops laid out ``SRC/<raw label>/*.png``. A crop's region comes from its alpha channel,
or from ``<name>_mask.png`` beside it, or else is the whole crop."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from defectkit.data import Annotation, Sample, find_images
from defectkit.data.masks import MASK_SUFFIX, _fail
from defectkit.errors import InputError
from defectkit.images import decode_file, read_mask, to_rgb


def read_crop_folder(src: Path, threshold: int = 127) -> Iterator[Sample]:
    for path in find_images(src):
        if path.stem.endswith(MASK_SUFFIX):
            continue
        relative = path.relative_to(src)
        if len(relative.parts) < 2:
            yield Sample(path, _fail(path, "crop lies directly in the data set folder; put it in a folder named after its label"))
            continue
        yield Sample(path, _loader(path, relative.parts[0], threshold), label=relative.parts[0], is_crop=True)


def _loader(path: Path, label: str, threshold: int):
    def load():
        raw = decode_file(path)
        image = to_rgb(raw)
        mask_path = path.with_name(path.stem + MASK_SUFFIX + ".png")
        if raw.ndim == 3 and raw.shape[2] == 4:
            mask = raw[:, :, 3] > (threshold if raw.dtype == np.uint8 else threshold * 257)
        elif mask_path.is_file():
            mask = read_mask(mask_path, threshold)
            if mask.shape != image.shape[:2]:
                raise InputError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]}, its crop is {image.shape[1]}x{image.shape[0]}")
        else:
            mask = np.ones(image.shape[:2], dtype=bool)
        return image, [Annotation(label, mask=mask)]

    return load
