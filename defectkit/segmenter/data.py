"""Labelled images for the segmentation network: each image with one boolean target (defect pixels).

A data set of any format (masks, VOC, COCO, YOLO) becomes ``SegImage``s held in memory:

- masks and COCO polygons/RLE are the target as drawn;
- boxes (VOC, YOLO, COCO bbox-only) are weak masks: the filled box, or the ellipse inscribed in it
  (``box_fill``); their regions for scoring are the boxes themselves;
- defect-free images (a label that maps to ``background``, or an annotation file with no object)
  are negatives: their target is empty.

A file that cannot be used is reported with its reason and skipped; a defect image whose annotation
holds no region is a warning and is left out (it is neither a clean negative nor a usable positive).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from defectkit.data import Annotation, read_dataset
from defectkit.data.split import split_records
from defectkit.errors import DefectkitError, InputError, TaxonomyError
from defectkit.geometry import Region, connected_regions
from defectkit.taxonomy import BACKGROUND, Taxonomy

BOX_FILLS = ("box", "ellipse")
MIN_DEFECT_IMAGES = 8  # fewer cannot be split into a training and a validation part worth the name


@dataclass
class SegImage:
    path: Path
    image: np.ndarray  # uint8 RGB
    target: np.ndarray  # bool (H, W): defect pixels
    regions: list[Region]  # the true regions to find (for boxes: the filled boxes)
    stratum: str  # the first region's subtype, or background: what the split keeps balanced
    boxes: bool = False  # labelled with boxes: score by box overlap
    subtypes: list[str] = field(default_factory=list)  # each region's subtype (for per-class figures)


@dataclass
class SegData:
    images: list[SegImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def defect_images(self) -> list[SegImage]:
        return [i for i in self.images if i.regions]

    def summary(self) -> dict:
        return {
            "images": len(self.images),
            "defect_images": len(self.defect_images),
            "regions": sum(len(i.regions) for i in self.images),
            "box_labelled": sum(i.boxes for i in self.images),
            "skipped": len(self.skipped),
        }


def load_seg_data(src: str | Path, format: str, taxonomy: Taxonomy, box_fill: str = "ellipse", min_area: int = 10,
                  mask_threshold: int = 127, progress: bool = True) -> SegData:
    """Read every usable image of a labelled data set into memory with its defect target."""
    if box_fill not in BOX_FILLS:
        raise DefectkitError(f"box fill must be one of {', '.join(BOX_FILLS)}, got {box_fill!r}")
    data = SegData([])
    samples = list(read_dataset(src, format, mask_threshold))
    for sample in tqdm(samples, desc="read", unit="img", disable=not progress):
        try:
            if sample.is_crop:
                raise InputError(sample.image_path, "a crop folder has no whole images; train-proposer needs masks, voc, coco or yolo")
            image, annotations = sample.load()
            free = sample.defect_free or (sample.label is not None and _resolve(taxonomy, sample.label, sample.image_path)[0] == BACKGROUND)
            if free:
                data.images.append(SegImage(Path(sample.image_path), image, np.zeros(image.shape[:2], bool), [], BACKGROUND))
                continue
            if not sample.annotated:
                raise InputError(sample.image_path, "no annotation beside it, and its label is a defect")
            item = _defect_image(sample.image_path, image, annotations, taxonomy, box_fill, min_area)
        except (InputError, TaxonomyError) as exc:
            data.skipped.append((str(getattr(exc, "path", sample.image_path)), getattr(exc, "reason", str(exc))))
            continue
        if item is None:
            data.warnings.append((str(sample.image_path), f"annotated as a defect but holds no region of {min_area} px or more; left out"))
        else:
            data.images.append(item)
    return data


def _resolve(taxonomy: Taxonomy, label: str, path) -> tuple[str, str]:
    try:
        return taxonomy.resolve(label)
    except TaxonomyError as exc:
        raise InputError(path, str(exc)) from exc


def _defect_image(path, image: np.ndarray, annotations: list[Annotation], taxonomy: Taxonomy, box_fill: str,
                  min_area: int) -> SegImage | None:
    height, width = image.shape[:2]
    target = np.zeros((height, width), dtype=bool)
    regions: list[Region] = []
    subtypes: list[str] = []
    boxes = False
    for ann in annotations:
        category, subtype = _resolve(taxonomy, ann.label, path)
        if category == BACKGROUND:
            continue
        if ann.is_box:
            boxes = True
            corners = ann.polygon if ann.polygon is not None else _mask_corners(ann.mask)
            region = box_region(corners, (height, width))
            if region.area < min_area:
                continue
            regions.append(region)
            x, y, w, h = region.x, region.y, region.w, region.h
            if box_fill == "box":
                target[y : y + h, x : x + w] = True
            else:
                canvas = np.zeros((h, w), np.uint8)
                cv2.ellipse(canvas, (((w - 1) / 2, (h - 1) / 2), (w, h), 0), 1, -1)
                target[y : y + h, x : x + w] |= canvas.astype(bool)
        else:
            mask = ann.mask if ann.mask is not None else Region.from_polygon(ann.polygon, image.shape).full_mask((height, width))
            found = connected_regions(mask, min_area)
            regions += found
            for region in found:
                target[region.y : region.y + region.h, region.x : region.x + region.w] |= region.mask
        subtypes += [subtype] * (len(regions) - len(subtypes))
    if not regions:
        return None
    return SegImage(Path(path), image, target, regions, subtypes[0], boxes, subtypes)


def _mask_corners(mask: np.ndarray) -> list[list[float]]:
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return [[x, y], [x + w - 1, y + h - 1]]


def box_region(polygon, shape: tuple[int, int]) -> Region:
    """The box spanned by ``polygon``'s corners, clipped to an image of ``shape`` (a filled Region)."""
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, shape[1] - 1), min(y1, shape[0] - 1)
    if x1 < x0 or y1 < y0:
        return Region(0, 0, np.zeros((0, 0), bool))
    return Region(int(x0), int(y0), np.ones((y1 - y0 + 1, x1 - x0 + 1), bool))


def split_seg_data(images: list[SegImage], val_fraction: float, seed: int) -> tuple[list[SegImage], list[SegImage]]:
    """Training and validation images, split by image and balanced per stratum (``split_records``)."""
    defect = sum(1 for i in images if i.regions)
    if defect < MIN_DEFECT_IMAGES:
        raise DefectkitError(
            f"found {defect} image(s) with a defect region; training a proposer needs at least {MIN_DEFECT_IMAGES} "
            "(a few for validation, the rest to learn from). Label more images."
        )
    records = [{"image": str(index), "subtype": image.stratum} for index, image in enumerate(images)]
    train, val = split_records(records, val_fraction, seed)
    return [images[int(r["image"])] for r in train], [images[int(r["image"])] for r in val]


def rescaled(item: SegImage, scale: float) -> SegImage:
    """``item`` as the network sees it at ``input_scale``: image and target resized, regions found
    again on the resized target (a thin line keeps its pixels: any pixel a quarter covered stays)."""
    if scale == 1.0:
        return item
    from defectkit.segmenter.inference import rescale

    image = rescale(item.image, scale)
    coverage = cv2.resize(item.target.astype(np.float32), image.shape[1::-1], interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    target = coverage >= 0.25
    regions = connected_regions(target) if item.regions else []
    return SegImage(item.path, image, target, regions, item.stratum, item.boxes, item.subtypes)
