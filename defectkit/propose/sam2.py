"""SAM2 proposals (the real ``sam2`` package): automatic, prompted, or automatic on tiles.

- ``automatic``: ``SAM2AutomaticMaskGenerator`` over a point grid, then de-duplication.
- ``prompted``: boxes and/or points answered by ``SAM2ImagePredictor`` against one image
  encoding per image, in batched calls (``hybrid`` feeds it another proposer's regions): all
  prompts in one call on CUDA, ``prompts_per_batch`` (4) at a time on CPU, where the decoder's
  working set grows with the batch and 32 prompts decode faster in calls of 4 than in one
  (``benchmarks/speed.py`` #2 at K=32: the proposer against one bare ``predict`` of all 32).
- ``tiled``: like automatic, but an image larger than ``tile_size`` is cut into overlapping tiles,
  each seen at the model's full input resolution (small defects on large images survive), and the
  pieces of an object cut by a tile border are merged. Prompts on such an image go to the tile that
  holds their box.

The model comes from a config name (the package's ``sam2.1_hiera_t|s|b+|l``, ``sam2_hiera_*``, or a
YAML in ``configs/sam2/``) and a checkpoint (an explicit path, or the expected file name looked up in
``checkpoints/``), built by :mod:`defectkit.sam2_model` once per process. CUDA (with bf16 autocast)
when present, else CPU.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import numpy as np
import yaml

from defectkit.devices import pick_device
from defectkit.errors import DefectkitError
from defectkit.propose.base import Proposer, Prompts
from defectkit.propose.masks import dedupe, merge_tiles, tight, tile_boxes
from defectkit.sam2_model import load_model as build_sam2_model
from defectkit.yaml_files import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# Package config -> checkpoint file name, as published by Meta (sam2.build_sam.HF_MODEL_ID_TO_FILENAMES).
PACKAGE_CONFIGS = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
    "sam2_hiera_t": ("configs/sam2/sam2_hiera_t.yaml", "sam2_hiera_tiny.pt"),
    "sam2_hiera_s": ("configs/sam2/sam2_hiera_s.yaml", "sam2_hiera_small.pt"),
    "sam2_hiera_b+": ("configs/sam2/sam2_hiera_b+.yaml", "sam2_hiera_base_plus.pt"),
    "sam2_hiera_l": ("configs/sam2/sam2_hiera_l.yaml", "sam2_hiera_large.pt"),
}
DEFAULT_CONFIG = "sam2.1_hiera_t"
MODES = ("automatic", "prompted", "tiled")
# Settings (and their defaults) that a configs/sam2/*.yaml file or the caller may change.
DEFAULTS = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.8,
    "stability_score_thresh": 0.95,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_mask_region_area": 0,
    "dedupe_iou": 0.7,  # masks overlapping a better one this much are dropped
    "max_fraction": 0.5,  # masks covering more of the image (or tile) than this are background
    "tile_size": 1024,  # the model's input side
    "tile_overlap": 0.25,
    "multimask_output": False,  # for prompts: one mask each, or the best of three
    "prompts_per_batch": None,  # prompts per decoder call; 0: all at once; None: 4 on CPU, 0 on CUDA
}


def checkpoint_dirs() -> list[Path]:
    return list(dict.fromkeys([Path.cwd() / "checkpoints", REPO_ROOT / "checkpoints"]))


def config_dirs() -> list[Path]:
    return list(dict.fromkeys([Path.cwd() / "configs" / "sam2", REPO_ROOT / "configs" / "sam2"]))


def resolve_config(name: str) -> tuple[str, Path | None, str | None, dict]:
    """(package config stem, full model YAML or None, checkpoint named by the file or None, options).

    ``name`` is a package config (``sam2.1_hiera_t``, with or without ``.yaml``), a YAML path, or the
    stem of a YAML in ``configs/sam2/``. Such a YAML is either a complete SAM2 model config (it has
    ``model._target_``) or a choice of model: ``model: sam2.1_hiera_t``, optional ``checkpoint:``, and
    ``options:`` (any of this proposer's settings: mode, points_per_side, ...).
    """
    stem = Path(name).name.removesuffix(".yaml")
    if stem in PACKAGE_CONFIGS and not Path(name).is_file():
        return stem, None, None, {}
    path = Path(name)
    if not path.is_file():
        path = next((d / f"{stem}.yaml" for d in config_dirs() if (d / f"{stem}.yaml").is_file()), path)
    if not path.is_file():
        known = sorted(PACKAGE_CONFIGS) + sorted({p.stem for d in config_dirs() for p in d.glob("*.yaml")})
        raise DefectkitError(f"unknown SAM2 config {name!r}; choose one of: {', '.join(known)}, or give a YAML path")
    try:
        data = load_yaml(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DefectkitError(f"{path}: not a readable YAML file ({exc})") from exc
    model = data.get("model")
    if isinstance(model, dict) and "_target_" in model:
        return path.stem, path, None, {}
    if model not in PACKAGE_CONFIGS:
        raise DefectkitError(f"{path}: 'model' must be one of {', '.join(PACKAGE_CONFIGS)} (or a full SAM2 model config), got {model!r}")
    return model, None, data.get("checkpoint"), dict(data.get("options") or {})


def expected_checkpoint(stem: str) -> str:
    return PACKAGE_CONFIGS[stem][1] if stem in PACKAGE_CONFIGS else f"{stem}.pt"


def find_checkpoint(stem: str, checkpoint: str | Path | None = None) -> Path | None:
    """The checkpoint to load: ``checkpoint`` (a path, or a file name in ``checkpoints/``), else the
    expected file name for ``stem`` in ``checkpoints/``; None when there is none."""
    names = [str(checkpoint)] if checkpoint else [expected_checkpoint(stem)]
    for name in names:
        if Path(name).is_file():
            return Path(name)
        for folder in checkpoint_dirs():
            if (folder / name).is_file():
                return folder / name
    return None


def missing_checkpoint_error(stem: str, checkpoint: str | Path | None) -> DefectkitError:
    where = " or ".join(str(d) for d in checkpoint_dirs())
    asked = f"{checkpoint} was not found; " if checkpoint else ""
    return DefectkitError(
        f"no SAM2 checkpoint for {stem}: {asked}download {expected_checkpoint(stem)} (from Meta's SAM2 "
        f"release; other sizes: {', '.join(sorted({v[1] for v in PACKAGE_CONFIGS.values()}))}) into {where}, "
        "or pass its path with --sam2-checkpoint; without SAM2 use --proposer classical"
    )


@functools.lru_cache(maxsize=4)
def load_model(stem: str, model_yaml: Path | None, checkpoint: Path | None, device: str):
    """The SAM2 model for a config and checkpoint on ``device``, built once per process."""
    return build_sam2_model(str(model_yaml) if model_yaml is not None else stem, checkpoint, device)


class SAM2Proposer(Proposer):
    name = "sam2"
    accepts_prompts = True

    def __init__(
        self,
        config: str = DEFAULT_CONFIG,
        checkpoint: str | Path | None = None,
        mode: str | None = None,
        device: str | None = None,
        random_weights: bool = False,
        **options,
    ):
        super().__init__()

        stem, model_yaml, yaml_checkpoint, yaml_options = resolve_config(config)
        mode = mode or yaml_options.pop("mode", "automatic")
        yaml_options.pop("mode", None)
        unknown = sorted(set(yaml_options) - set(DEFAULTS)) + sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise DefectkitError(f"sam2 proposer: unknown option(s) {', '.join(unknown)}; known: mode, {', '.join(DEFAULTS)}")
        if mode not in MODES:
            raise DefectkitError(f"sam2 proposer: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.settings = {**DEFAULTS, **yaml_options, **options}
        self.mode = mode
        self.config_name = stem if model_yaml is None else str(model_yaml)
        self.device = pick_device(device)
        if self.settings["prompts_per_batch"] is None:
            self.settings["prompts_per_batch"] = 0 if self.device.type == "cuda" else 4
        wanted = checkpoint or yaml_checkpoint
        self.checkpoint = find_checkpoint(stem, wanted)
        if self.checkpoint is None:
            if wanted or not random_weights:
                raise missing_checkpoint_error(stem, wanted)
            warnings.warn(f"sam2 proposer: {stem} with RANDOM weights (random_weights=True): its masks mean nothing; for tests only", stacklevel=2)
        self.model = load_model(stem, model_yaml, self.checkpoint, str(self.device))
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.predictor = SAM2ImagePredictor(self.model)
        self._generator = None
        self._encoded = False

    def config(self) -> dict:
        return {
            "mode": self.mode,
            "model": self.config_name,
            "checkpoint": str(self.checkpoint) if self.checkpoint else "RANDOM WEIGHTS",
            "device": str(self.device),
            **self.settings,
        }

    def _autocast(self):
        import torch

        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- per image -------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        super().set_image(image, image_path)
        self._encoded = False
        if self.mode == "prompted" and not self._tiled():
            self._encode(image)
            self._encoded = True

    def _encode(self, image: np.ndarray) -> None:
        """The expensive step: the image encoder's features, kept by the predictor."""
        import torch

        with torch.inference_mode(), self._autocast():
            self.predictor.set_image(image)

    def _tiled(self) -> bool:
        return self.mode == "tiled" and max(self.image.shape[:2]) > self.settings["tile_size"]

    # --- per prompt ------------------------------------------------------------------------------
    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        self._check(prompts)
        if prompts is not None:
            return self._prompted(prompts) if len(prompts) else []
        if self.mode == "prompted":
            raise DefectkitError("sam2 in prompted mode needs box or point prompts; use mode automatic or tiled, "
                                 "or the hybrid proposer to prompt SAM2 with another proposer's regions")
        return self._automatic()

    def _prompted(self, prompts: Prompts) -> list[np.ndarray]:
        if not self._tiled():
            if not self._encoded:
                self._encode(self.image)
                self._encoded = True
            return self._ask(prompts)
        height, width = self.image.shape[:2]
        boxes = tile_boxes(height, width, self.settings["tile_size"], self.settings["tile_overlap"])
        masks: list[np.ndarray | None] = [None] * len(prompts)
        for tile, members in _assign(prompts, boxes).items():
            if tile is None:  # larger than a tile: the whole image, resized to the model input
                self._encode(self.image)
                answers = self._ask(prompts.subset(members))
            else:
                x0, y0, x1, y1 = boxes[tile]
                self._encode(np.ascontiguousarray(self.image[y0:y1, x0:x1]))
                answers = []
                for piece in self._ask(prompts.subset(members).shifted(x0, y0)):
                    full = np.zeros((height, width), dtype=bool)
                    full[y0:y1, x0:x1] = piece
                    answers.append(full)
            for index, mask in zip(members, answers):
                masks[index] = mask
        self._encoded = False
        return masks

    def _ask(self, prompts: Prompts) -> list[np.ndarray]:
        """One mask per prompt against the current encoding, ``prompts_per_batch`` prompts per call."""
        size = int(self.settings["prompts_per_batch"]) or len(prompts)
        return [mask for start in range(0, len(prompts), size) for mask in self._ask_batch(prompts.subset(slice(start, start + size)))]

    def _ask_batch(self, prompts: Prompts) -> list[np.ndarray]:
        """One batched predict call for these prompts against the current encoding."""
        import torch

        with torch.inference_mode(), self._autocast():
            masks, scores, _ = self.predictor.predict(
                point_coords=prompts.points,
                point_labels=prompts.labels,
                box=prompts.boxes,
                multimask_output=self.settings["multimask_output"],
            )
        n = len(prompts)
        masks = masks.reshape(n, -1, *masks.shape[-2:])
        best = np.asarray(scores).reshape(n, -1).argmax(axis=1)
        return [masks[i, best[i]] > 0 for i in range(n)]

    def _automatic(self) -> list[np.ndarray]:
        height, width = self.image.shape[:2]
        boxes = tile_boxes(height, width, self.settings["tile_size"], self.settings["tile_overlap"]) if self._tiled() else [(0, 0, width, height)]
        regions, scores, tiles = [], [], []
        for index, (x0, y0, x1, y1) in enumerate(boxes):
            limit = self.settings["max_fraction"] * (x1 - x0) * (y1 - y0)
            for record in self._generate(np.ascontiguousarray(self.image[y0:y1, x0:x1])):
                region = tight(record["segmentation"], x0, y0)
                if region is None or region.area > limit:
                    continue
                regions.append(region)
                scores.append(record["predicted_iou"] * record["stability_score"])
                tiles.append(index)
        if len(boxes) > 1:
            regions, groups = merge_tiles(regions, tiles, boxes)
            scores = [max(scores[i] for i in group) for group in groups]
        keep = dedupe(regions, scores, self.settings["dedupe_iou"])
        return [regions[i].full_mask((height, width)) for i in keep]

    def _generate(self, image: np.ndarray) -> list[dict]:
        import torch
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        if self._generator is None:
            knobs = ("points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
                     "box_nms_thresh", "crop_n_layers", "min_mask_region_area")
            self._generator = SAM2AutomaticMaskGenerator(self.model, output_mode="binary_mask", **{k: self.settings[k] for k in knobs})
        with torch.inference_mode(), self._autocast():
            return self._generator.generate(image)


def _assign(prompts: Prompts, boxes: list[tuple[int, int, int, int]]) -> dict[int | None, list[int]]:
    """Group prompts by the tile that holds each one's box (or points) farthest from the tile's
    edges; None for prompts no tile holds."""
    groups: dict[int | None, list[int]] = {}
    for i in range(len(prompts)):
        coords = []
        if prompts.boxes is not None:
            coords.append(prompts.boxes[i].reshape(2, 2))
        if prompts.points is not None:
            coords.append(prompts.points[i])
        coords = np.concatenate(coords)
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        best, best_margin = None, -1.0
        for t, (x0, y0, x1, y1) in enumerate(boxes):
            margin = min(lo[0] - x0, lo[1] - y0, x1 - 1 - hi[0], y1 - 1 - hi[1])
            if margin >= 0 and margin > best_margin:
                best, best_margin = t, margin
        groups.setdefault(best, []).append(i)
    return groups
