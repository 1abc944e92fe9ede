"""`defectkit extract`: a labelled data set in, a crop data set (manifest + crop images) out."""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from defectkit.bundle_files import sha256_file
from defectkit.crops import CropSpec, crop_region
from defectkit.data import Annotation, Sample, read_dataset
from defectkit.data.background import ShapePool, sample_background_regions
from defectkit.data.manifest import MANIFEST, SETTINGS, write_manifest
from defectkit.defect import Defect
from defectkit.errors import InputError, TaxonomyError
from defectkit.geometry import Region, connected_regions, describe
from defectkit.images import atomic_write_text, write_png
from defectkit.matching import MATCH_IOU, region_iou
from defectkit.taxonomy import BACKGROUND, Taxonomy


@dataclass(frozen=True)
class ExtractOptions:
    format: str = "masks"
    mask_threshold: int = 127
    min_area: int = 10
    polygon_tolerance: float = 1.0
    crop: CropSpec = CropSpec()
    background_per_image: int = 2
    background_in_defect_images: int = 0
    negatives_from: str | None = None  # a proposer whose proposals off every defect become background
    proposer_model: str | None = None  # the proposer bundle of negatives_from learned (or auto, hybrid)
    proposal_positives: bool = True  # negatives_from's proposals that match a defect become crops of its subtype
    device: str | None = None  # where negatives_from's network runs (learned, sam2, ...)
    seed: int = 0


@dataclass
class ExtractSummary:
    out: Path
    images: int = 0
    crops: Counter = field(default_factory=Counter)  # (category, subtype) -> count
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    empty: list[str] = field(default_factory=list)  # defect images that yielded no region

    @property
    def manifest(self) -> Path:
        return self.out / MANIFEST


class _Extractor:
    def __init__(self, src: Path, out: Path, taxonomy: Taxonomy, options: ExtractOptions):
        self.src, self.out, self.taxonomy, self.options = src, out, taxonomy, options
        self.pool = ShapePool()
        self.records: list[dict] = []
        self.per_image: Counter = Counter()
        self.image_sha256: dict[Path, str] = {}  # source images by content: copies under two names group together
        self.summary = ExtractSummary(out)
        self.negatives = None
        if options.negatives_from:
            from defectkit.propose import build_proposer

            self.negatives = build_proposer(options.negatives_from, proposer_model=options.proposer_model, device=options.device)

    def run(self, progress: bool) -> ExtractSummary:
        samples = list(read_dataset(self.src, self.options.format, self.options.mask_threshold))
        deferred: list[Sample] = []  # defect-free images wait until every defect shape is known
        bar = tqdm(total=len(samples), desc="extract", unit="img", disable=not progress)
        for sample in samples:
            try:
                if self._is_defect_free(sample):
                    deferred.append(sample)
                    continue
                self._defect_image(sample)
            except (InputError, TaxonomyError) as exc:
                self.summary.skipped.append((str(sample.image_path), _reason(exc, sample.image_path)))
            bar.update()
        for sample in deferred:
            try:
                image, _ = sample.load()
                self._background(sample, image, self.options.background_per_image, avoid=None)
                self._proposals(sample, image, np.zeros(image.shape[:2], dtype=bool), [])
            except InputError as exc:
                self.summary.skipped.append((str(sample.image_path), _reason(exc, sample.image_path)))
            bar.update()
        bar.close()
        self.summary.images = len(samples)
        write_manifest(self.out / MANIFEST, self.records)
        settings = {**asdict(self.options), "source": str(self.src),
                    "negatives_proposer": self.negatives.describe() if self.negatives is not None else None}
        atomic_write_text(self.out / SETTINGS, json.dumps(settings, indent=2) + "\n")
        return self.summary

    def _is_defect_free(self, sample: Sample) -> bool:
        if sample.label is not None:
            category, _ = self._resolve(sample.label, sample.image_path)
            if category == BACKGROUND:
                return True
            if not sample.annotated:
                raise InputError(
                    sample.image_path,
                    f"no mask beside it (expected {sample.image_path.stem}.png or "
                    f"{sample.image_path.stem}_mask.png) and its label {sample.label!r} is a defect",
                )
            return False
        return sample.defect_free

    def _resolve(self, label: str, path: Path) -> tuple[str, str]:
        try:
            return self.taxonomy.resolve(label)
        except TaxonomyError as exc:
            raise InputError(path, str(exc)) from exc

    def _defect_image(self, sample: Sample) -> None:
        image, annotations = sample.load()
        labelled = [(ann, *self._resolve(ann.label, sample.image_path)) for ann in annotations]
        union = np.zeros(image.shape[:2], dtype=bool)
        truths: list[tuple[Defect, bool]] = []  # (defect, labelled with a box)
        found = 0
        for ann, category, subtype in labelled:
            for region in self._regions(ann, image, sample.is_crop):
                defect = describe(region, image, str(sample.image_path), self.options.polygon_tolerance)
                defect.label, defect.category, defect.subtype = ann.label, category, subtype
                self._save(sample, image, defect, origin="annotation")
                truths.append((defect, ann.is_box))
                union[region.y : region.y + region.h, region.x : region.x + region.w] |= region.mask
                if category != BACKGROUND:
                    self.pool.add(region)
                found += 1
        if not found:  # a defect image with an empty mask: where its defect lies is unknown, so no background from it
            self.summary.empty.append(str(sample.image_path))
            return
        if self.options.background_in_defect_images and not sample.is_crop:
            keep_clear = cv2.dilate(union.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
            self._background(sample, image, self.options.background_in_defect_images, avoid=keep_clear)
        if not sample.is_crop:
            self._proposals(sample, image, union, truths)

    def _proposals(self, sample: Sample, image: np.ndarray, defects: np.ndarray, truths: list[tuple[Defect, bool]]) -> None:
        """Run ``negatives_from`` on the image. Its proposals that touch no real defect become
        background crops of exactly the kind that proposer gets wrong, so the classifier learns to
        reject them. With ``proposal_positives``, a proposal that matches a true region (IoU >=
        MATCH_IOU, of boxes where the truth is a box) becomes a crop of that region's subtype:
        the classifier then also learns defects as the proposer outlines them, not only as a
        person drew them."""
        if self.negatives is None:
            return
        for mask in self.negatives.propose(image, image_path=str(sample.image_path)):
            for region in connected_regions(mask, self.options.min_area):
                window = defects[region.y : region.y + region.h, region.x : region.x + region.w]
                if (window & region.mask).any():
                    truth = self._matched(region, truths) if self.options.proposal_positives else None
                    if truth is None:
                        continue
                    label, category, subtype, origin = truth.label, truth.category, truth.subtype, "proposal"
                else:
                    label, category, subtype, origin = sample.label, BACKGROUND, BACKGROUND, "negative"
                defect = describe(region, image, str(sample.image_path), self.options.polygon_tolerance)
                defect.label, defect.category, defect.subtype = label, category, subtype
                self._save(sample, image, defect, origin=origin)

    @staticmethod
    def _matched(region: Region, truths: list[tuple[Defect, bool]]) -> Defect | None:
        """The true defect ``region`` overlaps best, if that overlap reaches MATCH_IOU."""
        best, best_iou = None, MATCH_IOU
        for truth, is_box in truths:
            overlap = float(region_iou([truth.region], [region], boxes=is_box)[0, 0])
            if overlap >= best_iou:
                best, best_iou = truth, overlap
        return best

    def _regions(self, ann: Annotation, image: np.ndarray, is_crop: bool) -> list[Region]:
        if ann.polygon is not None:
            return [Region.from_polygon(ann.polygon, image.shape)]
        if is_crop:  # a crop is one defect, however many pieces its mask has
            ys, xs = np.nonzero(ann.mask)
            if len(xs) == 0:
                return []
            return [Region(int(xs.min()), int(ys.min()), ann.mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])]
        regions = connected_regions(ann.mask)
        kept = [r for r in regions if r.area >= self.options.min_area]
        if regions and not kept:  # an annotated defect is never dropped whole: keep its largest speck
            kept = [max(regions, key=lambda r: r.area)]
        return kept

    def _background(self, sample: Sample, image: np.ndarray, count: int, avoid: np.ndarray | None) -> None:
        seed = [self.options.seed, zlib.crc32(os.fsencode(self._key(sample)))]
        regions = sample_background_regions(self.pool, image.shape, count, np.random.default_rng(seed), avoid)
        for region in regions:
            defect = describe(region, image, str(sample.image_path), self.options.polygon_tolerance)
            defect.label = sample.label
            defect.category = defect.subtype = BACKGROUND
            self._save(sample, image, defect, origin="sampled")

    def _key(self, sample: Sample) -> str:
        try:
            return sample.image_path.relative_to(self.src).as_posix()
        except ValueError:
            return sample.image_path.as_posix()

    def _save(self, sample: Sample, image: np.ndarray, defect: Defect, origin: str) -> None:
        if sample.is_crop:
            size = self.options.crop.size
            crop = _square(image, size, cv2.INTER_AREA)
            mask = _square(defect.region.full_mask(image.shape).astype(np.uint8) * 255, size, cv2.INTER_NEAREST)
        else:
            crop, mask = crop_region(image, defect.region, self.options.crop)
        tag = f"{zlib.crc32(os.fsencode(self._key(sample))):08x}"
        defect.id = self.per_image[defect.image]
        self.per_image[defect.image] += 1
        stem = f"crops/{defect.subtype}/{sample.image_path.stem}-{tag}-{defect.id}"
        write_png(self.out / f"{stem}.png", crop)
        write_png(self.out / f"{stem}_mask.png", mask)
        defect.crop_path, defect.mask_path = f"{stem}.png", f"{stem}_mask.png"
        if sample.image_path not in self.image_sha256:
            self.image_sha256[sample.image_path] = sha256_file(sample.image_path)
        self.records.append({**defect.to_dict(), "origin": origin, "image_sha256": self.image_sha256[sample.image_path]})
        self.summary.crops[(defect.category, defect.subtype)] += 1


def _square(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """Pad to a centred square with zeros, then resize to size x size."""
    height, width = array.shape[:2]
    side = max(height, width)
    out = np.zeros((side, side) + array.shape[2:], dtype=array.dtype)
    y0, x0 = (side - height) // 2, (side - width) // 2
    out[y0 : y0 + height, x0 : x0 + width] = array
    return cv2.resize(out, (size, size), interpolation=interpolation)


def _reason(exc: Exception, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def extract(
    src: str | Path,
    out: str | Path,
    taxonomy: Taxonomy,
    options: ExtractOptions = ExtractOptions(),
    progress: bool = True,
) -> ExtractSummary:
    """Turn the labelled data set at ``src`` into a crop data set at ``out``; see ExtractSummary."""
    return _Extractor(Path(src), Path(out), taxonomy, options).run(progress)
