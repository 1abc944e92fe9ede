"""``defectkit train --unlabelled DIR``: self-training (pseudo-labelling) on a line's unlabelled images.

1. The ensemble is trained on the labelled crops, with grouped cross-validation.
2. Per subtype (background included), the confidence at which the out-of-fold predictions of the
   labelled crops reach ``target_precision`` is the bar a pseudo-label must clear: chosen on
   labelled data only, once; a class that never reaches it gets no pseudo-labels.
3. The proposer finds regions on the unlabelled images and the model classifies them; the regions
   that clear their class's bar become crops labelled with that class (a crop data set beside the
   output, ``OUT.self-training/round-K``).
4. The ensemble is trained again on the labelled crops plus these; steps 3-4 repeat for ``rounds``.

The bundle's training summary records the bars, the pseudo-labels per class and round, and the
labelled-only cross-validation (the only honest CV figure: one over pseudo-labels would score the
model against its own guesses).
"""

from __future__ import annotations

import heapq
import shutil
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from defectkit.classifier import ClassifierConfig
from defectkit.data.manifest import settings_path, write_manifest
from defectkit.data.patches import image_files
from defectkit.errors import DefectkitError
from defectkit.images import write_png
from defectkit.jobs.train import TrainResult, train
from defectkit.labelled import load_labelled
from defectkit.metrics import precision_thresholds
from defectkit.taxonomy import Taxonomy


@dataclass(frozen=True)
class SelfTrainOptions:
    rounds: int = 2
    target_precision: float = 0.95  # a pseudo-label's class must reach this precision on labelled out-of-fold predictions
    per_labelled: float | None = 1.0  # at most this many pseudo-labels of a class per labelled crop of it (None: no cap)
    proposer: str = "auto"

    def validate(self, cv: int) -> None:
        if self.rounds < 1:
            raise DefectkitError(f"--rounds must be at least 1, got {self.rounds}")
        if not 0 < self.target_precision < 1:
            raise DefectkitError(f"--pseudo-precision must be between 0 and 1, got {self.target_precision}")
        if self.per_labelled is not None and self.per_labelled <= 0:
            raise DefectkitError(f"--pseudo-per-labelled must be more than 0, got {self.per_labelled}")
        if cv < 2:
            raise DefectkitError("--unlabelled needs --cv 2 or more: the pseudo-label bars are chosen on the labelled crops' "
                                 "out-of-fold predictions")


def self_train(dataset: str | Path, unlabelled: str | Path | list[Path], taxonomy: Taxonomy, out: str | Path,
               config: ClassifierConfig = ClassifierConfig(), cv: int = 5, cache=None, progress: bool = True,
               options: SelfTrainOptions = SelfTrainOptions(), **train_options) -> TrainResult:
    """Train on ``dataset``'s crops and the confident pseudo-labels of the images in ``unlabelled``
    (a folder, or a list of image paths); ``train_options`` go to every :func:`train` call."""
    options.validate(cv)
    images = list(unlabelled) if isinstance(unlabelled, list) else image_files(unlabelled)
    if not images:
        raise DefectkitError(f"--unlabelled {unlabelled}: no images found")
    work = Path(str(out) + ".self-training")
    shutil.rmtree(work, ignore_errors=True)
    first = train(dataset, taxonomy, work / "round-0" / "model", config, cv, cache, progress, **train_options)
    labelled_cv, crops = first.cv, load_labelled(dataset, taxonomy)
    bars = precision_thresholds(crops.subtypes, labelled_cv.predicted, labelled_cv.confidence, options.target_precision,
                                background=True)
    chosen = first.summary["config"]
    config = replace(config, texture=chosen["texture"], embedding=chosen["embedding"])  # train's feature choice on the labelled CV, kept
    train_options = {k: v for k, v in train_options.items() if k != "choose_features"}
    counts = Counter(crops.subtypes.tolist())
    caps = None if options.per_labelled is None else {s: int(options.per_labelled * n) for s, n in counts.items()}
    model, rounds = first.bundle, []
    for number in range(1, options.rounds + 1):
        pseudo, unreadable = pseudo_label(model, images, bars, work / f"round-{number}", options.proposer, progress, caps)
        combined = work / f"round-{number}"
        write_manifest(combined / "manifest.jsonl", crops.records + pseudo)
        if settings_path(dataset).is_file():
            shutil.copyfile(settings_path(dataset), settings_path(combined))
        rounds.append({"round": number, "pseudo_labels": dict(sorted(Counter(r["subtype"] for r in pseudo).items())),
                       "images_with_pseudo_labels": len({r["image"] for r in pseudo}), "unreadable_images": unreadable})
        last = number == options.rounds
        record = {"self_training": {"unlabelled_images": len(images), "target_precision": options.target_precision, "bars": bars,
                                    "rounds": rounds, "labelled_cv": {"k": labelled_cv.k, "subtype_macro_f1":
                                    labelled_cv.reports["hierarchy"]["subtype"]["macro_f1"]}}} if last else None
        result = train(combined, taxonomy, out if last else combined / "model", config, 0, cache, progress, record=record,
                       **train_options)
        model = result.bundle
    result.cv = labelled_cv
    return result


def pseudo_label(model_dir: Path, images: list[Path], bars: dict[str, float | None], folder: Path, proposer: str,
                 progress: bool, caps: dict[str, int] | None = None) -> tuple[list[dict], int]:
    """The regions the model at ``model_dir`` finds on ``images`` and names with a confidence at or
    above its class's bar (the ``caps[class]`` most confident of each class, where capped), written
    as crops under ``folder``: their manifest records, and how many images could not be read
    (skipped: an unlabelled image that cannot be read teaches nothing)."""
    from defectkit.pipeline import DefectClassifier

    classifier = DefectClassifier.load(model_dir, proposer, keep_background=True, min_confidence=0.0, defect_threshold=0.0)
    kept: dict[str, list] = {}  # per class: (confidence, arrival, path, defect), a min-heap where capped
    unreadable, arrival = 0, 0
    bar = tqdm(classifier.stream(images), total=len(images), desc="pseudo-label", unit="img", disable=not progress)
    for path, _, result in bar:
        if isinstance(result, Exception):
            unreadable += 1
            continue
        for defect in result.defects:
            if bars.get(defect.subtype) is None or defect.confidence < bars[defect.subtype]:
                continue
            item, heap = (defect.confidence, arrival, path, defect), kept.setdefault(defect.subtype, [])
            arrival += 1
            cap = None if caps is None else caps.get(defect.subtype, 0)
            # capped, the class balance is kept: a flood of easy background pseudo-labels would otherwise
            # outweigh the labelled defects; the heap keeps memory bounded on a large archive
            if cap is None:
                heap.append(item)
            elif len(heap) < cap:
                heapq.heappush(heap, item)
            elif cap and item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
    candidates = [(path, defect) for *_, path, defect in sorted((i for heap in kept.values() for i in heap), key=lambda i: i[1])]
    records = []
    for path, defect in candidates:
        stem = f"crops/{defect.subtype}/{Path(path).stem}-{len(records)}"
        write_png(folder / f"{stem}.png", defect.crop)
        write_png(folder / f"{stem}_mask.png", defect.crop_mask)
        record = {**defect.to_dict(), "crop_path": f"{stem}.png", "mask_path": f"{stem}_mask.png", "origin": "pseudo"}
        record.pop("scores", None)
        records.append(record)
    return records, unreadable

