"""How well a SAM2 model segments held-out defects, per subtype.

For every ground-truth region of every image, against one encoding of the image:

- box IoU: the mask answered to the region's tight box (one mask, as SAM answers boxes);
- point IoU: the mask answered to one click on the region's centre (the pixel farthest from its
  border), the best of three by the model's own predicted IoU;
- automatic recall: whether ``SAM2AutomaticMaskGenerator`` (no prompts; a point grid of
  ``points_per_side`` squared) produced a mask with IoU >= 0.5 against the region.

IoU is measured at the image's own resolution. ``side_by_side`` puts several models' summaries in
one table.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from defectkit.matching import iou_matrix
from defectkit.sam2_finetune.data import LabelledImage, box_of, center_point
from defectkit.sam2_finetune.model import image_predictor, quiet_jit
from defectkit.propose.sam2 import DEFAULTS as SAM2_DEFAULTS

# Small enough for a CPU; SAM2's own defaults are points_per_side=32 (and crop layers for small objects).
AMG_DEFAULTS = {
    **{k: SAM2_DEFAULTS[k] for k in ("points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                                     "box_nms_thresh", "crop_n_layers", "min_mask_region_area")},
    "points_per_side": 16,
}
RECALL_IOU = 0.5
METRICS = ("box_miou", "point_miou", "amg_recall")


@dataclass
class RegionScore:
    image: str
    subtype: str
    box_iou: float
    point_iou: float
    amg_iou: float | None  # best IoU of any automatic mask; None when the generator was not run


@dataclass
class Evaluation:
    scores: list[RegionScore] = field(default_factory=list)
    amg_masks: list[int] = field(default_factory=list)  # automatic masks per image
    seconds: float = 0.0

    def summary(self) -> dict[str, dict]:
        """subtype (and ``all``) -> regions, box_miou, point_miou, amg_recall (None without the generator)."""
        groups: dict[str, list[RegionScore]] = {}
        for s in self.scores:
            groups.setdefault(s.subtype, []).append(s)
        out = {name: _summarise(group) for name, group in sorted(groups.items())}
        out["all"] = _summarise(self.scores)
        return out

    @property
    def images(self) -> int:
        return len({s.image for s in self.scores})

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "images": self.images,
            "mean_automatic_masks_per_image": float(np.mean(self.amg_masks)) if self.amg_masks else None,
            "seconds": self.seconds,
        }


def _summarise(scores: list[RegionScore]) -> dict:
    if not scores:
        return {"regions": 0, "box_miou": None, "point_miou": None, "amg_recall": None}
    amg = [s.amg_iou for s in scores if s.amg_iou is not None]
    return {
        "regions": len(scores),
        "box_miou": float(np.mean([s.box_iou for s in scores])),
        "point_miou": float(np.mean([s.point_iou for s in scores])),
        "amg_recall": float(np.mean([v >= RECALL_IOU for v in amg])) if amg else None,
    }


def evaluate(model, images: list[LabelledImage], amg: dict | None = AMG_DEFAULTS, progress: bool = True,
             desc: str = "evaluating") -> Evaluation:
    """Score ``model`` on the regions of ``images``; ``amg=None`` skips the automatic generator."""
    started = time.perf_counter()
    predictor = _predictor_sharing_encodings(model)
    generator = None
    if amg is not None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        settings = {**AMG_DEFAULTS, **amg}
        with quiet_jit():
            generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
        predictor._transforms.max_hole_area = predictor._transforms.max_sprinkle_area = settings["min_mask_region_area"]
        generator.predictor = predictor  # the generator's encoding of the image is the one we made
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if model.device.type == "cuda" else contextlib.nullcontext()
    result = Evaluation()
    for image in tqdm(images, desc=desc, unit="image", disable=not progress, leave=False):
        pixels = image.load()
        height, width = pixels.shape[:2]
        truth = np.stack([inst.region.full_mask((height, width)) for inst in image.instances])
        n = len(truth)
        with torch.inference_mode(), autocast:
            predictor.set_image(pixels)
            masks, _, _ = predictor.predict(box=np.stack([box_of(i.region) for i in image.instances]), multimask_output=False)
            box_masks = masks.reshape(n, -1, height, width)[:, 0] > 0
            points = np.stack([center_point(i.region) for i in image.instances])[:, None, :]
            masks, predicted, _ = predictor.predict(point_coords=points, point_labels=np.ones((n, 1), dtype=np.int64), multimask_output=True)
            masks = masks.reshape(n, -1, height, width)
            point_masks = masks[np.arange(n), np.asarray(predicted).reshape(n, -1).argmax(axis=1)] > 0
            automatic = [r["segmentation"] for r in generator.generate(pixels)] if generator else None
        box_iou = iou_matrix(truth, box_masks).diagonal()
        point_iou = iou_matrix(truth, point_masks).diagonal()
        if automatic is not None:
            result.amg_masks.append(len(automatic))
            amg_iou = iou_matrix(truth, np.stack(automatic)).max(axis=1) if automatic else np.zeros(n)
        for i, inst in enumerate(image.instances):
            result.scores.append(RegionScore(
                image.key, inst.subtype, float(box_iou[i]), float(point_iou[i]),
                None if automatic is None else float(amg_iou[i]),
            ))
    result.seconds = time.perf_counter() - started
    return result


def _predictor_sharing_encodings(model):
    """An image predictor that keeps its last image's encoding, so the automatic generator's
    ``set_image`` on the same pixels (its single crop is the whole image) costs nothing."""
    predictor = image_predictor(model)
    memo: dict = {}
    encode = predictor.set_image

    def set_image(image):
        key = (image.__array_interface__["data"][0], image.shape, image.strides)
        if memo.get("key") == key:
            predictor.reset_predictor()
            predictor._features, predictor._orig_hw, predictor._is_image_set = memo["features"], memo["orig_hw"], True
            return
        encode(image)
        # the image is held so its memory (and so the key) cannot be reused by the next image
        memo.update(key=key, image=image, features=predictor._features, orig_hw=predictor._orig_hw)

    predictor.set_image = set_image
    return predictor


def side_by_side(evaluations: dict[str, Evaluation]) -> tuple[list[str], list[list[str]]]:
    """A header and rows, one row per subtype and model: subtype, regions, model, box mIoU, point
    mIoU, automatic recall (the subtype and its count only on its first row)."""
    summaries = {name: ev.summary() for name, ev in evaluations.items()}
    subtypes = list(next(iter(summaries.values()))) if summaries else []
    header = ["subtype", "regions", "model", "box mIoU", "point mIoU", "auto recall@0.5"]
    rows = []
    for subtype in subtypes:
        for index, (name, summary) in enumerate(summaries.items()):
            s = summary.get(subtype, {})
            first = [subtype, str(s.get("regions", 0))] if index == 0 else ["", ""]
            rows.append(first + [name] + [_fmt(s.get(metric)) for metric in METRICS])
    return header, rows


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def evaluate_checkpoints(src, config: str, checkpoints: list, data=None, image_size: int | None = None,
                         device=None, amg: dict | None = AMG_DEFAULTS, progress: bool = True):
    """Evaluate each checkpoint on the held-out images of the data set at ``src``; returns the split
    and ``{name: Evaluation}`` in the order given (names are the files' stems).

    A checkpoint that defectkit fine-tuned records its training images: if any of them is among
    the held-out images here (another --seed or --val-fraction than in training), that is an error.
    Each checkpoint runs at ``image_size``, else the size it was trained at, else its config's.
    """
    from pathlib import Path

    from defectkit.errors import DefectkitError
    from defectkit.sam2_finetune.data import DataOptions, load_split
    from defectkit.sam2_finetune.model import load_model, read_metadata
    from defectkit.devices import pick_device

    device = pick_device(device)
    split = load_split(src, data or DataOptions())
    if not split.heldout:
        raise DefectkitError(f"{src}: no held-out images (--val-fraction {getattr(data, 'val_fraction', None)}); nothing to evaluate on")
    heldout = {i.key for i in split.heldout}
    stems = [Path(c).stem for c in checkpoints]
    results = {}
    for checkpoint, stem in zip(checkpoints, stems):
        name = stem if stems.count(stem) == 1 else str(checkpoint)
        meta = read_metadata(checkpoint) if Path(checkpoint).is_file() else {}
        leaked = sorted(heldout & set(meta.get("train_images", [])))
        if leaked:
            raise DefectkitError(
                f"{checkpoint} was trained on {len(leaked)} of these held-out images (e.g. {leaked[0]}); evaluate with "
                f"the split it was trained with: --seed {meta.get('seed')} --val-fraction {meta.get('val_fraction')}"
            )
        model = load_model(config, checkpoint, device, image_size or meta.get("image_size"))
        results[name] = evaluate(model, split.heldout, amg=amg, progress=progress, desc=f"evaluating {name}")
        del model
    return split, results
