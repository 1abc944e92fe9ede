"""The fine-tuning loop, and ``finetune_sam2``: a data set and a checkpoint in, a checkpoint out.

What trains: the prompt encoder and the mask decoder. The image encoder is frozen by default, and
with it the two convolutions that ``SAM2Base.forward_image`` applies to its high-resolution
features: together they make the image embedding that ``SAM2ImagePredictor.set_image`` computes, so
it is computed once per image and kept (``cache_gb``) rather than recomputed every epoch.
``train_image_encoder=True`` trains all of it (at ``encoder_lr``, a tenth of ``lr`` by default).

Each step takes ``batch_size`` images; every region of an image (at most ``max_objects``, drawn at
random) gets a prompt, and all prompts of an image run as one batch against its one encoding.
Losses are computed, as in SAM2, on the mask logits upsampled to the model's input size.

Resuming: after every epoch the checkpoint (stock layout) and, beside it, ``<name>.train-state.pt``
(optimizer, epoch, history, the images trained on) are written; ``resume=True`` continues from them.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from defectkit.devices import pick_device
from defectkit.errors import DefectkitError
from defectkit.jsonable import to_jsonable
from defectkit.sam2_finetune.data import DataOptions, LabelledImage, Prompt, Split, load_split, sample_prompt, training_subset
from defectkit.sam2_finetune.evaluate import evaluate
from defectkit.sam2_finetune.losses import LossWeights, sam2_loss
from defectkit.sam2_finetune.model import Features, decode, encode, load_model, resolve_config, save_checkpoint, to_model_frame, transforms_for
from defectkit.state_dicts import load_failure, write_state
from defectkit.tensorboard import tensorboard_writer

# Parameters of the mask decoder that belong to the image-embedding path (run by forward_image).
EMBEDDING_PATH = ("sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.")
LOSS_PARTS = ("total", "focal", "dice", "iou", "object")


@dataclass
class FinetuneOptions:
    epochs: int = 10
    lr: float = 1e-4
    encoder_lr: float | None = None  # None: lr / 10
    weight_decay: float = 0.1  # not on biases and norms
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * this over the run (SAM2's schedule)
    batch_size: int = 4  # images per forward pass
    accumulate: int = 1  # forward passes per optimizer step
    train_image_encoder: bool = False
    max_objects: int = 16  # prompts per image per step
    box_probability: float = 0.5
    max_points: int = 3
    negative_probability: float = 0.5
    grad_clip: float = 0.1  # max gradient norm (SAM2 fine-tuning uses 0.1); 0 turns it off
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    seed: int = 0
    cache_gb: float = 4.0  # image embeddings kept (frozen encoder only)
    loss_weights: LossWeights = field(default_factory=LossWeights)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "accumulate", "max_objects", "max_points"):
            if getattr(self, name) < 1:
                raise DefectkitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise DefectkitError(f"--lr must be positive, got {self.lr}")


def set_trainable(model, train_image_encoder: bool) -> list[str]:
    """Freeze everything but what fine-tuning trains; returns the names of the trained parameters."""
    names = []
    for name, param in model.named_parameters():
        if name.startswith("image_encoder.") or name.startswith(EMBEDDING_PATH):
            trainable = train_image_encoder
        else:
            trainable = name.startswith(("sam_prompt_encoder.", "sam_mask_decoder."))
        param.requires_grad_(trainable)
        if trainable:
            names.append(name)
    model.eval()
    model.sam_prompt_encoder.train()
    model.sam_mask_decoder.train()
    if train_image_encoder:
        model.image_encoder.train()
    return names


def make_optimizer(model, options: FinetuneOptions) -> torch.optim.AdamW:
    encoder_lr = options.encoder_lr if options.encoder_lr is not None else options.lr / 10
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = encoder_lr if name.startswith("image_encoder.") else options.lr
        decay = 0.0 if param.ndim <= 1 else options.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "lr": lr, "initial_lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]
    )


class FeatureCache:
    """Image embeddings by image key, up to a budget of bytes (the rest are recomputed)."""

    def __init__(self, budget_bytes: float):
        self.budget = budget_bytes
        self.used = 0
        self.items: dict[str, Features] = {}

    def get(self, key: str) -> Features | None:
        return self.items.get(key)

    def put(self, key: str, features: Features) -> None:
        if key not in self.items and self.used + features.nbytes <= self.budget:
            self.items[key] = features
            self.used += features.nbytes


class Trainer:
    """One model, its optimizer and its feature cache; ``fit`` runs the epochs."""

    def __init__(self, model, options: FinetuneOptions, progress: bool = True, log_dir: str | Path | None = None):
        options.validate()
        self.model = model
        self.options = options
        self.progress = progress
        self.device = model.device
        self.side = model.image_size
        self.transforms = transforms_for(model)
        self.trainable = set_trainable(model, options.train_image_encoder)
        self.optimizer = make_optimizer(model, options)
        self.cache = None if options.train_image_encoder else FeatureCache(options.cache_gb * 2**30)
        self.writer = tensorboard_writer(log_dir, warn=False)
        self.cuda = self.device.type == "cuda"

    def autocast(self):
        if self.cuda and self.options.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- image embeddings ---------------------------------------------------------------------
    def features(self, images: list[LabelledImage]) -> list[Features]:
        """Encodings of ``images``: from the cache, or computed (with gradients when the encoder trains)."""
        found = {i.key: self.cache.get(i.key) for i in images} if self.cache else {}
        missing = [i for i in images if found.get(i.key) is None]
        if missing:
            grad = self.options.train_image_encoder and torch.is_grad_enabled()
            with torch.set_grad_enabled(grad), self.autocast():
                computed = encode(self.model, [i.load() for i in missing], self.transforms)
            for image, feats in zip(missing, computed):
                if self.cache is not None:
                    feats = feats.to(self.device, torch.bfloat16 if self.cuda and self.options.amp else torch.float32)
                    self.cache.put(image.key, feats)
                found[image.key] = feats
        return [found[i.key] for i in images]

    def precompute(self, images: list[LabelledImage], desc: str) -> None:
        if self.cache is None:
            return
        todo = [i for i in images if self.cache.get(i.key) is None]
        size = self.options.batch_size
        with torch.no_grad():
            for start in tqdm(range(0, len(todo), size), desc=desc, unit="batch", disable=not self.progress or not todo, leave=False):
                kept = len(self.cache.items)
                self.features(todo[start : start + size])
                if len(self.cache.items) == kept:
                    break  # the cache is full: the rest are encoded when they are used

    # --- losses -------------------------------------------------------------------------------
    def image_loss(self, image: LabelledImage, features: Features, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Summed losses of all prompts drawn for one image, and ``objects``, their number."""
        instances = image.instances
        if len(instances) > self.options.max_objects:
            instances = [instances[i] for i in sorted(rng.choice(len(instances), self.options.max_objects, replace=False))]
        o = self.options
        prompts = [sample_prompt(inst.region, image.shape, rng, o.box_probability, o.max_points, o.negative_probability)
                   for inst in instances]
        targets = torch.from_numpy(np.stack([target_mask(inst.region, image.shape, self.side) for inst in instances]))
        targets = targets[:, None].to(self.device)
        totals = {k: torch.zeros((), device=self.device) for k in LOSS_PARTS}
        for indices in _groups(prompts):
            group = [prompts[i] for i in indices]
            coords = np.stack([to_model_frame(p.coords, image.shape, self.side) for p in group])
            labels = np.stack([p.labels for p in group])
            with self.autocast():
                logits, iou_pred, object_score = decode(
                    self.model, features,
                    torch.from_numpy(coords).to(self.device),
                    torch.from_numpy(labels).to(self.device, torch.int),
                )
            chosen = slice(1, 4) if group[0].multimask else slice(0, 1)
            logits = F.interpolate(logits[:, chosen].float(), size=(self.side, self.side), mode="bilinear", align_corners=False)
            parts = sam2_loss(logits, targets[indices], iou_pred[:, chosen], object_score, self.options.loss_weights)
            for key in LOSS_PARTS:
                totals[key] = totals[key] + parts[key]
        totals["objects"] = torch.tensor(float(len(instances)))
        return totals

    def batch_loss(self, images: list[LabelledImage], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        feats = self.features(images)
        sums = {k: 0.0 for k in LOSS_PARTS}
        objects = 0.0
        for image, f in zip(images, feats):
            parts = self.image_loss(image, f, rng)
            objects += float(parts.pop("objects"))
            for key in LOSS_PARTS:
                sums[key] = sums[key] + parts[key]
        return {k: v / max(objects, 1.0) for k, v in sums.items()} | {"objects": objects}

    @torch.no_grad()
    def evaluate_loss(self, images: list[LabelledImage], seed: int) -> dict[str, float]:
        """Mean losses per object over ``images`` with prompts fixed by ``seed`` (comparable across epochs)."""
        if not images:
            return {}
        rng = np.random.default_rng([seed, 7919])
        was_training = self.model.sam_mask_decoder.training
        self.model.sam_mask_decoder.eval()
        sums, objects = {k: 0.0 for k in LOSS_PARTS}, 0.0
        size = self.options.batch_size
        for start in range(0, len(images), size):
            parts = self.batch_loss(images[start : start + size], rng)
            objects += parts["objects"]
            for key in LOSS_PARTS:
                sums[key] += float(parts[key]) * parts["objects"]
        self.model.sam_mask_decoder.train(was_training)
        return {k: v / max(objects, 1.0) for k, v in sums.items()}

    # --- the loop -----------------------------------------------------------------------------
    def fit(self, train: list[LabelledImage], heldout: list[LabelledImage], start_epoch: int = 0,
            history: list[dict] | None = None, on_epoch_end: Callable[[int, list[dict]], None] | None = None) -> list[dict]:
        o = self.options
        if not train:
            raise DefectkitError("no training images with regions: nothing to fine-tune on")
        history = list(history or [])
        self.precompute(train, "encoding training images")
        self.precompute(heldout, "encoding held-out images")
        batches = math.ceil(len(train) / o.batch_size)
        steps_per_epoch = math.ceil(batches / o.accumulate)
        total_steps = o.epochs * steps_per_epoch
        step = start_epoch * steps_per_epoch
        params = [p for p in self.model.parameters() if p.requires_grad]
        for epoch in range(start_epoch, o.epochs):
            started = time.perf_counter()
            rng = np.random.default_rng([o.seed, epoch])
            torch.manual_seed(o.seed * 1000 + epoch)
            order = [train[i] for i in rng.permutation(len(train))]
            running = {k: 0.0 for k in LOSS_PARTS}
            seen = 0.0
            bar = tqdm(range(batches), desc=f"epoch {epoch + 1}/{o.epochs}", unit="batch", disable=not self.progress, leave=False)
            self.optimizer.zero_grad(set_to_none=True)
            for index in bar:
                parts = self.batch_loss(order[index * o.batch_size : (index + 1) * o.batch_size], rng)
                (parts["total"] / o.accumulate).backward()
                seen += parts["objects"]
                for key in LOSS_PARTS:
                    running[key] += float(parts[key].detach()) * parts["objects"]
                if (index + 1) % o.accumulate == 0 or index + 1 == batches:
                    lr_scale = _cosine(step, total_steps, o.min_lr_ratio)
                    for group in self.optimizer.param_groups:
                        group["lr"] = group["initial_lr"] * lr_scale
                    if o.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    if self.writer:
                        self.writer.add_scalar("train/loss", float(parts["total"].detach()), step)
                        self.writer.add_scalar("train/lr", lr_scale * o.lr, step)
                bar.set_postfix(loss=f"{running['total'] / max(seen, 1):.4f}")
            bar.close()
            record = {"epoch": epoch + 1, **{f"train_{k}": v / max(seen, 1) for k, v in running.items()}}
            record.update({f"heldout_{k}": v for k, v in self.evaluate_loss(heldout, o.seed).items()})
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            if self.writer:
                for key, value in record.items():
                    if key.startswith(("train_", "heldout_")):
                        self.writer.add_scalar(f"epoch/{key}", value, epoch + 1)
                self.writer.flush()
            if on_epoch_end:
                on_epoch_end(epoch + 1, history)
        if self.writer:
            self.writer.close()
        return history


def finetune(model, train: list[LabelledImage], heldout: list[LabelledImage] = (), options: FinetuneOptions | None = None,
             progress: bool = True, log_dir: str | Path | None = None, **fit_kwargs) -> list[dict]:
    """Fine-tune ``model`` in place on ``train``; returns the per-epoch history (losses per object)."""
    trainer = Trainer(model, options or FinetuneOptions(), progress=progress, log_dir=log_dir)
    history = trainer.fit(list(train), list(heldout), **fit_kwargs)
    model.eval()
    return history


def target_mask(region, shape: tuple[int, int], side: int) -> np.ndarray:
    """A region as a float {0, 1} mask in the model's square input frame (side x side). A region too
    thin to survive the resize keeps every pixel it touches."""
    full = region.full_mask(shape).astype(np.float32)
    downscale = side < max(shape)
    soft = cv2.resize(full, (side, side), interpolation=cv2.INTER_AREA if downscale else cv2.INTER_LINEAR)
    hard = soft >= 0.5
    if not hard.any():
        hard = soft > 0
    return hard.astype(np.float32)


def _groups(prompts: list[Prompt]) -> list[list[int]]:
    """Prompts of the same length and kind go through the decoder together (no padding tokens)."""
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault((len(p.labels), p.multimask), []).append(i)
    return list(groups.values())


def _cosine(step: int, total: int, min_ratio: float) -> float:
    progress = min(step / max(total, 1), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --- the whole workflow: data set + checkpoint -> checkpoint (+ evaluation) -----------------------


@dataclass
class FinetuneResult:
    checkpoint: Path
    state: Path
    history: list[dict]
    split: Split
    train_images: list[LabelledImage]
    evaluations: dict = field(default_factory=dict)  # name -> Evaluation (base and fine-tuned)
    start_epoch: int = 0
    seconds: float = 0.0
    log_dir: Path | None = None


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.train-state.pt")


def finetune_sam2(
    src: str | Path,
    out: str | Path,
    config: str,
    checkpoint: str | Path,
    options: FinetuneOptions | None = None,
    data: DataOptions | None = None,
    fraction: float = 1.0,
    image_size: int | None = None,
    device: str | None = None,
    resume: bool = False,
    evaluate_after: bool = True,
    amg: dict | None = None,
    log_dir: str | Path | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune SAM2 ``config`` from ``checkpoint`` on the data set at ``src``; write ``out``.

    The held-out images (``data.val_fraction`` of each label, by ``data.seed``) are never trained
    on: their loss is reported every epoch, and afterwards the base and the fine-tuned model are
    evaluated on them side by side (unless ``evaluate_after`` is False).
    """
    started = time.perf_counter()
    options = options or FinetuneOptions()
    data = data or DataOptions(seed=options.seed)
    options.validate()
    out, config_name = Path(out), resolve_config(config)
    if out.suffix != ".pt":
        raise DefectkitError(f"--out must name a .pt file (the checkpoint), got {out}")
    device = pick_device(device)
    torch.manual_seed(options.seed)
    split = load_split(src, data)
    train = training_subset(split.train, fraction, data.seed)
    state_file = state_path(out)
    state = _read_state(state_file, out) if resume else None
    if state is not None:
        _check_resumable(state, state_file, config_name, image_size, options, train)
    model = load_model(config, out, device, image_size or state["image_size"]) if state else load_model(config, checkpoint, device, image_size)
    start_epoch, history = (int(state["epoch"]), list(state["history"])) if state else (0, [])
    log_dir = out.with_name(f"{out.stem}-tensorboard") if log_dir is None else log_dir
    trainer = Trainer(model, options, progress=progress, log_dir=log_dir)
    if state is not None:
        trainer.optimizer.load_state_dict(state["optimizer"])

    def metadata(epoch: int, history: list[dict]) -> dict:
        return {
            "config": config_name,
            "base_checkpoint": str(checkpoint),
            "image_size": int(model.image_size),
            "dataset": str(src),
            "format": data.format,
            "taxonomy": data.taxonomy.name if data.taxonomy else None,
            "seed": data.seed,
            "val_fraction": data.val_fraction,
            "fraction": fraction,
            "train_images": [i.key for i in train],
            "heldout_images": [i.key for i in split.heldout],
            "epoch": epoch,
            "history": history,
            "options": to_jsonable(asdict(options)),
        }

    def on_epoch_end(epoch: int, history: list[dict]) -> None:
        meta = metadata(epoch, history)
        save_checkpoint(model, out, meta)
        write_state(state_file, {**meta, "optimizer": trainer.optimizer.state_dict()})

    if start_epoch < options.epochs:
        history = trainer.fit(train, split.heldout, start_epoch=start_epoch, history=history, on_epoch_end=on_epoch_end)
    model.eval()
    result = FinetuneResult(out, state_file, history, split, train, start_epoch=start_epoch,
                            log_dir=Path(log_dir) if trainer.writer else None)
    if evaluate_after and split.heldout:
        base = load_model(config, checkpoint, device, model.image_size)
        result.evaluations["base"] = evaluate(base, split.heldout, amg=amg, progress=progress, desc="evaluating base")
        del base
        result.evaluations["fine-tuned"] = evaluate(model, split.heldout, amg=amg, progress=progress, desc="evaluating fine-tuned")
    result.seconds = time.perf_counter() - started
    return result


def _read_state(state_file: Path, out: Path) -> dict:
    if not state_file.is_file() or not out.is_file():
        raise DefectkitError(f"nothing to resume: {state_file if not state_file.is_file() else out} not found "
                             f"(it is written after every epoch of a run with --out {out})")
    try:
        return torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DefectkitError(f"{state_file}: not a readable training state ({load_failure(exc)})") from exc


def _check_resumable(state: dict, state_file: Path, config_name: str, image_size: int | None,
                     options: FinetuneOptions, train: list[LabelledImage]) -> None:
    saved = state.get("options", {})
    problems = []
    if state.get("config") != config_name:
        problems.append(f"config {state.get('config')} (now {config_name})")
    if image_size and state.get("image_size") != image_size:
        problems.append(f"image size {state.get('image_size')} (now {image_size})")
    if saved.get("lr") != options.lr:
        problems.append(f"lr {saved.get('lr')} (now {options.lr}; the optimizer state, learning rates included, is restored)")
    if saved.get("train_image_encoder") != options.train_image_encoder:
        problems.append(f"train_image_encoder={saved.get('train_image_encoder')} (now {options.train_image_encoder})")
    if list(state.get("train_images", [])) != [i.key for i in train]:
        problems.append("another set of training images (check --seed, --val-fraction, --fraction and the data set)")
    if problems:
        raise DefectkitError(f"cannot resume from {state_file}: it was trained with {'; '.join(problems)}")
