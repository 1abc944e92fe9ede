"""`DefectClassifier`: the one object an inspection script needs. Image in, classified defects out.

    clf = DefectClassifier.load("models/magnetic-tile")
    for result in clf.classify_batch(paths):   # streams, in order, 16 images at a time
        for d in result.defects:
            print(d.subtype, d.confidence, d.area, d.edges)

Per image: propose masks, split them into regions and polygonize them, crop each region exactly as
`extract` cropped the training data, embed the crops, and let the bundle's hierarchy decide. Over
many images (:meth:`DefectClassifier.stream`), a worker thread proposes ahead while the regions of
16 images at a time go through the backbone and the classifier together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from defectkit.bundle import Bundle, load_bundle
from defectkit.classifier import decide
from defectkit.crops import CropSpec, crop_region
from defectkit.defect import Defect
from defectkit.ensemble.hierarchy import UNCERTAIN
from defectkit.errors import DefectkitError
from defectkit.defect import image_record
from defectkit.export import defect_mask, overlay
from defectkit.features import crop_features
from defectkit.geometry import polygonize
from defectkit.images import from_array, read_image
from defectkit.propose import build_proposer
from defectkit.propose.base import Proposer, effective_name
from defectkit.streaming import ahead, chunked
from defectkit.taxonomy import BACKGROUND
from defectkit.timing import Timings, stage

CHUNK_IMAGES = 16  # images whose regions are embedded and classified together


@dataclass
class Result:
    """One image's classified defects (background proposals dropped unless asked to keep them)."""

    image: str
    size: tuple[int, int]  # (width, height)
    defects: list[Defect]
    proposer: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    proposals: int = 0  # regions proposed, before background was dropped
    error: str | None = None  # set by classify_batch when this image could not be processed

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def to_json(self) -> dict:
        """The record ``classify`` writes as ``<name>.json`` (``size`` is [width, height])."""
        return image_record(self.image, self.size, self.defects, proposer=self.proposer, model=self.model, proposals=self.proposals)

    def to_dict(self) -> dict:
        """The JSON record with the size spelled out, and the error of an image that failed."""
        return {**self.to_json(), "width": self.width, "height": self.height, "error": self.error}

    def masks(self) -> list[np.ndarray]:
        """Each defect's full-size boolean mask (height x width), in the order of ``defects``."""
        return [defect_mask(d) for d in self.defects]

    def overlay(self, image: np.ndarray | None = None) -> np.ndarray:
        """The image with the defects drawn on it (RGB uint8)."""
        return overlay(read_image(self.image) if image is None else image, self.defects)


def checked_probability(value, what: str) -> float:
    """``value`` as a float between 0 and 1, or an error that names ``what`` it is."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 <= number <= 1:
        raise DefectkitError(f"{what} {value!r}: a probability lies between 0 and 1")
    return number


def _defect_threshold(bundle: Bundle, asked: float | None) -> float:
    """The P(not background) below which a region is background: asked for, else the bundle's own."""
    if asked is None:
        asked = ((bundle.manifest.get("thresholds") or {}).get("defect") or {}).get("threshold", 0.0)
    return checked_probability(asked, "defect threshold")


def _thresholds(bundle: Bundle, asked: float | dict[str, float] | None) -> dict[str, float]:
    """Per subtype, the confidence below which it is reported uncertain: asked for by subtype, else
    asked for all, else the bundle's own."""
    subtypes = bundle.taxonomy.subtypes
    own = ((bundle.manifest.get("thresholds") or {}).get("per_class") or {})
    out = {s: float(t) for s, t in own.items() if t is not None}
    if isinstance(asked, (int, float)):
        asked = {"*": asked}
    if asked:
        asked = dict(asked)
        if "*" in asked:  # every subtype
            every = float(asked.pop("*"))
            out = {s: every for s in subtypes if s != BACKGROUND}
        unknown = sorted(set(asked) - set(subtypes))
        if unknown:
            raise DefectkitError(f"threshold for {', '.join(unknown)}: not a subtype of the model (subtypes: {', '.join(subtypes)})")
        out.update({s: float(t) for s, t in asked.items()})
    for subtype, threshold in out.items():
        if not 0 <= threshold <= 1:
            raise DefectkitError(f"threshold {threshold} for {subtype}: a confidence threshold lies between 0 and 1")
    return out


@dataclass(frozen=True)
class InMemory:
    """An image array in a batch, with the name its result carries."""

    name: str
    array: np.ndarray
    bgr: bool = False


class DefectClassifier:
    """A loaded model bundle plus a proposer; build it with :meth:`load`."""

    def __init__(self, bundle: Bundle, proposer: Proposer, min_area: int = 10, min_confidence: float | dict[str, float] | None = None,
                 keep_background: bool = False, crop: CropSpec | None = None, defect_threshold: float | None = None):
        """``min_confidence``: below it a defect is ``uncertain``; one value for every subtype, or a
        value per subtype (``"*"``: every other one; subtypes not named keep the bundle's own, chosen
        by ``train --target-precision``). ``defect_threshold``: a region whose P(not background) is
        below it is background (None: the bundle's own, chosen by ``train --max-false-alarms``; 0: none)."""
        self.bundle = bundle
        self.proposer = proposer
        self.min_area = min_area
        self.thresholds = _thresholds(bundle, min_confidence)
        self.defect_threshold = _defect_threshold(bundle, defect_threshold)
        self.keep_background = keep_background
        self.crop = crop or CropSpec(**bundle.manifest.get("training", {}).get("crop", {}))
        self.model_info = {"path": str(bundle.path), "taxonomy": bundle.taxonomy.name,
                           "backbone": (bundle.manifest.get("backbone") or {}).get("name")}

    @classmethod
    def load(cls, model_dir: str | Path, proposer: str | Proposer = "auto", sam2_checkpoint: str | None = None,
             sam2_config: str | None = None, proposer_model: str | Path | None = None, proposer_options: dict | None = None,
             device: str | None = None, **options) -> "DefectClassifier":
        """Load a bundle (checked file by file) and build the proposer by name (or take one given).
        ``auto``, ``learned``, ``hybrid`` and ``union`` use the bundle's own learned proposer unless
        ``proposer_model`` names another. ``device``: where the networks run (default CUDA when present)."""
        bundle = load_bundle(model_dir)
        bundle.embedder(device)  # load the backbone now, once, not on the first image
        if isinstance(proposer, str):
            if proposer_model is None and proposer in ("auto", "learned", "hybrid", "union") and bundle.proposer_path:
                proposer_model = bundle.proposer_path
            if proposer == "auto":
                proposer_options = {"trained_with": bundle.trained_with(), **(proposer_options or {})}
            proposer = build_proposer(proposer, sam2_checkpoint=sam2_checkpoint, sam2_config=sam2_config, options=proposer_options,
                                      proposer_model=str(proposer_model) if proposer_model else None, device=device)
        return cls(bundle, proposer, **options)

    def negatives_warning(self) -> str | None:
        """Why this classifier may flag clean surface: its model never learned to reject what this
        proposer finds there (no hard negatives, or hard negatives from another proposer)."""
        running = effective_name(self.proposer.describe())
        if running == "given":
            return None
        training = self.bundle.manifest.get("training") or {}
        if "negatives_from" not in training:
            return None  # a bundle from before this was recorded: nothing to go by
        trained = training["negatives_from"]
        if trained is None:
            return (f"the model was trained without hard negatives, so proposals of {running} on clean surface may be "
                    "reported as defects; extract the crops with --negatives-from auto (the default) and train again")
        if effective_name(trained) != running:
            return (f"the model learned to reject the proposals of {effective_name(trained)} but runs with {running}; "
                    f"clean surface may be flagged: extract with --negatives-from {running} and train again")
        return None

    def classify(self, image: np.ndarray | str | Path, image_path: str | Path | None = None, timings: Timings | None = None,
                 bgr: bool = False) -> Result:
        """Classify the defects on one image: a path to read, or an array (gray, RGB, RGBA, any
        depth; ``bgr=True`` for OpenCV's channel order). ``timings`` adds the seconds of each stage
        (read, propose, polygonize, crop, embed, classify)."""
        if isinstance(image, np.ndarray):
            image = from_array(image, bgr)
        else:
            with stage(timings, "read"):
                image_path, image = image, read_image(image)
        regions = self._regions(image, str(image_path or ""), timings)
        self._classify_regions([regions], timings)
        return self._result(regions)

    def classify_defects(self, image: np.ndarray, defects: list[Defect], timings: Timings | None = None) -> None:
        """Crop, embed and classify regions of ``image`` in place (sets category, subtype, confidence, scores)."""
        self._classify_regions([self._cut(image, "", defects, timings)], timings)

    def stream(self, images: Iterable[str | Path], timings: Timings | None = None, chunk_size: int = CHUNK_IMAGES,
               workers: int = 1) -> Iterator[tuple[Path, np.ndarray | None, Result | Exception]]:
        """``(path, image, result)`` for each image path in order; ``result`` is the exception that
        stopped an image that could not be read or classified (the stream goes on).

        With ``workers=1`` a worker thread reads, proposes, polygonizes and crops up to two chunks of
        images ahead (0: all on this thread; never more than one, as a proposer holds one image at a
        time), while this thread embeds and classifies the regions of ``chunk_size`` images at a time
        in one backbone pass and one classifier call (each has a fixed cost per call that a few crops
        would pay alone).
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        if workers not in (0, 1):
            raise ValueError(f"workers must be 0 or 1 (a proposer holds one image at a time), got {workers}")
        if isinstance(images, (str, Path)):  # one path, not the characters of one
            images = [images]
        prepared = ahead(lambda path: self._read_regions(path, timings), images, depth=2 * chunk_size, workers=workers)
        for chunk in chunked(prepared, chunk_size):
            good = [i for i, (_, regions) in enumerate(chunk) if not isinstance(regions, Exception)]
            try:
                self._classify_regions([chunk[i][1] for i in good], timings)
            except Exception:  # find the image that broke the chunk; the others still count
                for i in good:
                    try:
                        self._classify_regions([chunk[i][1]], timings)
                    except Exception as exc:
                        chunk[i] = (chunk[i][0], exc)
            for path, regions in chunk:
                yield (path, None, regions) if isinstance(regions, Exception) else (path, regions.image, self._result(regions))

    def classify_batch(self, images: Iterable[str | Path | np.ndarray], chunk_size: int = CHUNK_IMAGES, workers: int = 1,
                       bgr: bool = False) -> Iterator[Result]:
        """Classify images (paths, or arrays as :meth:`classify` takes them, named ``<array N>``),
        yielding one Result each, in order (see :meth:`stream`); an image that fails yields a Result
        with ``error`` set."""
        if isinstance(images, (str, Path, np.ndarray)):  # one image, not the characters or rows of one
            images = [images]
        items = (InMemory(f"<array {i}>", item, bgr) if isinstance(item, np.ndarray) else item for i, item in enumerate(images))
        for path, _, result in self.stream(items, chunk_size=chunk_size, workers=workers):
            if isinstance(result, Exception):
                result = Result(str(path), (0, 0), [], self.proposer.describe(), self.model_info, error=f"{type(result).__name__}: {result}")
            yield result

    def _read_regions(self, item, timings: Timings | None) -> tuple[Path, "_Regions | Exception"]:
        path = item
        try:
            if isinstance(item, InMemory):
                path, image = item.name, from_array(item.array, item.bgr)
                return path, self._regions(image, path, timings)
            if not isinstance(item, (str, Path)):
                raise TypeError(f"expected an image path or array, got {type(item).__name__}")
            path = Path(item)
            with stage(timings, "read"):
                image = read_image(path)
            return path, self._regions(image, str(path), timings)
        except Exception as exc:  # one bad image must not end a run over thousands
            return path, exc

    def _regions(self, image: np.ndarray, path: str, timings: Timings | None) -> "_Regions":
        with stage(timings, "propose"):
            masks = self.proposer.propose(image, image_path=path)
        with stage(timings, "polygonize"):
            defects = polygonize(masks, image, path, self.min_area)
        return self._cut(image, path, defects, timings)

    def _cut(self, image: np.ndarray, path: str, defects: list[Defect], timings: Timings | None) -> "_Regions":
        with stage(timings, "crop"):
            cuts = [crop_region(image, d.region, self.crop) for d in defects]
        return _Regions(path, image, defects, [c for c, _ in cuts], [m for _, m in cuts])

    def _classify_regions(self, images: list["_Regions"], timings: Timings | None) -> None:
        """Embed and classify the regions of several images in one pass; sets each defect's labels."""
        defects = [d for regions in images for d in regions.defects]
        if not defects:
            return
        crops = [c for regions in images for c in regions.crops]
        masks = [m for regions in images for m in regions.masks]
        with stage(timings, "embed"):
            X = crop_features(defects, crops, [m > 0 for m in masks], self.bundle.spec, self.bundle.embedder())
        with stage(timings, "classify"):
            self._decide(X, defects)
        for d, crop, mask in zip(defects, crops, masks):
            d.crop, d.crop_mask = crop, mask

    def _result(self, regions: "_Regions") -> Result:
        image, defects = regions.image, regions.defects
        kept = [d for d in defects if self.keep_background or d.category != BACKGROUND]
        return Result(regions.path, (image.shape[1], image.shape[0]), kept, self.proposer.describe(), self.model_info, len(defects))

    def _decide(self, X: np.ndarray, defects: list[Defect]) -> None:
        decision = decide(self.bundle.model, X)
        head = self.bundle.model[-1]
        categories = [str(c) for c in getattr(head, "categories_", [])]
        subtypes = [str(c) for c in head.classes_]
        for i, d in enumerate(defects):
            d.subtype = str(decision.subtype[i])
            d.category = str(decision.category[i]) if decision.category is not None else self.bundle.taxonomy.category_of(d.subtype)
            confidence = decision.confidence[i]
            if d.category != BACKGROUND and round(1.0 - float(decision.background[i]), 4) < self.defect_threshold:
                d.category = d.subtype = BACKGROUND
                confidence = decision.background[i]
            # to 4 decimals, as the scores: which images share a backbone pass changes the 8th
            # (floating-point sums in another order), and a result must not depend on its neighbours
            d.confidence = round(float(confidence), 4)
            d.scores = {"subtype": {s: round(float(p), 4) for s, p in zip(subtypes, decision.subtype_proba[i])}}
            if decision.category_proba is not None:
                d.scores["category"] = {c: round(float(p), 4) for c, p in zip(categories, decision.category_proba[i])}
            threshold = self.thresholds.get(d.subtype)
            if threshold is not None and d.confidence < threshold:
                d.category = d.subtype = UNCERTAIN


@dataclass
class _Regions:
    """One image's proposed regions and their crops, between proposing and classifying."""

    path: str
    image: np.ndarray
    defects: list[Defect]
    crops: list[np.ndarray]
    masks: list[np.ndarray]
