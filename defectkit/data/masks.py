"""The mask-pair layout: ``SRC/<raw label>/**/<name>.<jpg|png|bmp|tif>`` with ``<name>.png`` or
``<name>_mask.png`` beside it. The magnetic-tile data set is laid out this way."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defectkit.data import Annotation, Sample, find_images
from defectkit.errors import InputError
from defectkit.images import read_image, read_mask

MASK_SUFFIX = "_mask"


def pair_images(files: list[Path]) -> dict[Path, Path | None]:
    """image -> its mask (or None), where no file that is another image's mask counts as an image."""
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for path in files:
        by_stem.setdefault((path.parent, path.stem), []).append(path)
    masks: set[Path] = set()
    pairs: dict[Path, Path | None] = {}
    for path in files:
        if path.stem.endswith(MASK_SUFFIX) and (path.parent, path.stem[: -len(MASK_SUFFIX)]) in by_stem:
            masks.add(path)
            continue
        siblings = by_stem[(path.parent, path.stem)]
        png_sibling = next((p for p in siblings if p != path and p.suffix.lower() == ".png"), None)
        if path.suffix.lower() == ".png" and len(siblings) > 1:
            masks.add(path)  # x.png beside x.jpg is the mask of x.jpg
            continue
        suffixed = [p for p in by_stem.get((path.parent, path.stem + MASK_SUFFIX), [])]
        pairs[path] = suffixed[0] if suffixed else png_sibling
    return {image: mask for image, mask in pairs.items() if image not in masks}


def read_mask_pairs(src: Path, threshold: int = 127) -> Iterator[Sample]:
    files = find_images(src)
    for image_path, mask_path in pair_images(files).items():
        relative = image_path.relative_to(src)
        if len(relative.parts) < 2:
            yield Sample(image_path, _fail(image_path, "image lies directly in the data set folder; "
                                                    "put it in a folder named after its label"))
            continue
        yield Sample(
            image_path,
            _loader(image_path, mask_path, relative.parts[0], threshold),
            label=relative.parts[0],
            annotated=mask_path is not None,
        )


def _fail(path: Path, reason: str):
    def load():
        raise InputError(path, reason)

    return load


def _loader(image_path: Path, mask_path: Path | None, label: str, threshold: int):
    def load():
        image = read_image(image_path)
        if mask_path is None:
            return image, []
        mask = read_mask(mask_path, threshold)
        if mask.shape != image.shape[:2]:
            raise InputError(
                mask_path,
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        return image, [Annotation(label, mask=mask)]

    return load
