"""Contrastive pretraining of a timm backbone on defect crops: SimCLR (no labels) or SupCon (subtypes).
Given a folder of whole images instead of a crop data set, it learns (SimCLR) from random patches of
them at their own resolution (:mod:`defectkit.data.patches`): a line's unlabelled archive.

The backbone learns from two augmented views of every crop (NT-Xent or supervised contrastive loss
from pytorch-metric-learning, through a small projection head). Only the backbone is saved, as
safetensors, with a JSON beside it that ``Embedder`` reads (backbone name, image size, mask mode).
Views go through ``Embedder.prepare``, so pretraining sees exactly what embedding will see.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from defectkit.data.manifest import MANIFEST, read_manifest
from defectkit.data.patches import held_out_images, image_files, sample_patches
from defectkit.embed import DEFAULT_BACKBONE, Embedder
from defectkit.errors import DefectkitError
from defectkit.images import atomic_write_text, read_image, read_mask
from defectkit.schedule import BudgetSchedule
from defectkit.state_dicts import load_failure, save_weights, write_state
from defectkit.tensorboard import tensorboard_writer

METHODS = ("simclr", "supcon")


@dataclass(frozen=True)
class PretrainConfig:
    # SimCLR learns without labels, so the ensemble later trained on the same crops does not inherit
    # a backbone that memorised their labels (SupCon backbones did, and scored below random weights
    # in exploratory runs; benchmarks/pretrain_recipes.py re-measures both); 64 px with the mask as a
    # channel keeps pretraining on every magnetic-tile crop within about 20 minutes on 2 CPU cores.
    backbone: str = DEFAULT_BACKBONE
    method: str = "simclr"
    epochs: int = 30
    batch_size: int = 96
    image_size: int = 64
    mask_mode: str = "channel"
    init: str = "random"  # random | imagenet (packaged, defectkit.pretrained) | hub | PATH to weights
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    projection_dim: int = 128
    patch_size: int = 96  # a folder of whole images: side of the random patches, in the images' own pixels
    patches_per_image: int = 8
    max_patch_size: int = 0  # a folder of whole images: windows of sides up to this, shrunk to patch_size (0: all patch_size)
    max_minutes: float = 0.0  # time budget; the cosine spans it or the epochs, whichever ends first (0: epochs only)
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise DefectkitError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.epochs < 1 or self.batch_size < 4:
            raise DefectkitError(f"need epochs >= 1 and batch size >= 4, got {self.epochs} and {self.batch_size}")
        if self.max_minutes < 0:
            raise DefectkitError(f"--max-minutes must be 0 (no budget) or more, got {self.max_minutes}")


class Augment:
    """Two-view augmentation for grayscale industrial surfaces: random resized crop, flips, 90-degree
    turns (joint on crop and mask), then brightness/contrast, blur and noise on the crop."""

    def __init__(self, size: int):
        self.geometric = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomChoice([v2.RandomRotation((angle, angle)) for angle in (0, 90, 180, 270)]),
        ])
        self.photometric = v2.Compose([
            v2.ToDtype(torch.float32, scale=True),
            v2.ColorJitter(brightness=0.4, contrast=0.4),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
            v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=0.5),
        ])

    def __call__(self, crop: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = tv_tensors.Image(torch.from_numpy(crop).permute(2, 0, 1))
        region = tv_tensors.Mask(torch.from_numpy(mask.astype(np.uint8))[None])
        image, region = self.geometric(image, region)
        image = self.photometric(image).clamp(0, 1)
        return (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8), region[0].numpy().astype(bool)


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, crops, masks, labels, augment: Augment, prepare):
        self.crops, self.masks, self.labels = crops, masks, labels
        self.augment, self.prepare = augment, prepare

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int):
        views = [self.prepare(*self.augment(self.crops[index], self.masks[index])) for _ in range(2)]
        return torch.from_numpy(views[0]), torch.from_numpy(views[1]), int(self.labels[index])


def projection_head(dim: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out))


def _loss(method: str, temperature: float):
    from pytorch_metric_learning import losses

    return losses.NTXentLoss(temperature=temperature) if method == "simclr" else losses.SupConLoss(temperature=temperature)


def _loader(dataset: TwoViews, config: PretrainConfig, labels: np.ndarray):
    if config.method == "supcon":
        # SupCon needs several examples of each class in every batch, or its loss silently goes to zero.
        from pytorch_metric_learning.samplers import MPerClassSampler

        classes = len(set(labels.tolist()))
        per_class = max(2, config.batch_size // classes)
        sampler = MPerClassSampler(labels, m=per_class, batch_size=per_class * classes, length_before_new_iter=len(labels))
        return torch.utils.data.DataLoader(dataset, batch_size=per_class * classes, sampler=sampler, drop_last=True)
    return torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True)


def pretrain(
    dataset: str | Path,
    out: str | Path,
    config: PretrainConfig = PretrainConfig(),
    logdir: str | Path | None = None,
    progress: bool = True,
    exclude: Iterable[str | Path] = (),
) -> dict:
    """Pretrain a backbone on the crops of ``dataset`` (a crop data set), or on random patches of the
    images in ``dataset`` (a folder of images) less those in ``exclude``, and save it to ``out``
    (.safetensors) + ``out``.json.

    Resumes from ``out``.state.pt when it exists (written after every epoch). Returns the JSON summary.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise DefectkitError(f"--out must end in .safetensors, got {out}")
    if is_crop_dataset(dataset):
        if exclude:
            raise DefectkitError("--exclude is for a folder of images; a crop data set is taken as it is (split it first)")
        records, crops, masks, labels = _read_crops(dataset, config)
        data = {"dataset": str(dataset), "crops": len(records), "images": len({r["image"] for r in records}),
                "subtypes": dict(sorted(Counter(r["subtype"] for r in records).items()))}
    else:
        crops, masks, labels, data = _read_patches(dataset, config, exclude)

    _seed_everything(config.seed)
    embedder = Embedder(config.backbone, weights=config.init, image_size=config.image_size, mask_mode=config.mask_mode,
                        device=config.device, seed=config.seed)
    model = embedder.model
    head = projection_head(embedder.dim, config.projection_dim).to(embedder.device)
    parameters = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    dataset_views = TwoViews(crops, masks, labels, Augment(config.image_size), embedder.prepare)
    steps = config.epochs * len(_loader(dataset_views, config, labels))
    schedule = BudgetSchedule(config.lr, steps, config.max_minutes * 60, warmup=0.0, floor=0.0)
    criterion = _loss(config.method, config.temperature)

    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_suffix(".state.pt")
    parts = {"model": model, "head": head, "optimizer": optimizer, "schedule": schedule}
    start_epoch, history = _resume(state_path, config, parts, embedder.device)
    writer = tensorboard_writer(logdir)
    started = time.perf_counter()
    model.train()
    for epoch in range(start_epoch, config.epochs):
        if schedule.done():
            break
        _seed_everything(config.seed * 100_003 + epoch)
        loader = _loader(dataset_views, config, labels)  # afresh: MPerClassSampler keeps shuffled state between epochs
        bar = tqdm(loader, desc=f"pretrain {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        history.append(_epoch(bar, model, head, criterion, optimizer, schedule, config.method, embedder.device))
        if writer is not None:
            writer.add_scalar("loss", history[-1], epoch)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  loss {history[-1]:.4f}")
        write_state(state_path, {**{name: part.state_dict() for name, part in parts.items()}, "epoch": epoch + 1,
                                 "history": history, "config": json.dumps(asdict(config), sort_keys=True)})
    model.eval()
    save_weights(model, out)
    summary = {
        "backbone": config.backbone,
        "image_size": config.image_size,
        "mask_mode": config.mask_mode,
        "method": config.method,
        "epochs": len(history),
        "steps": schedule.step,
        "minutes": round(schedule.spent() / 60, 2),
        "final_loss": history[-1] if history else None,
        "loss_history": history,
        "config": asdict(config),
        "data": data,
        "seconds_this_run": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(summary, indent=2))
    state_path.unlink(missing_ok=True)
    if writer is not None:
        writer.close()
    return summary


def _read_crops(dataset, config: PretrainConfig) -> tuple[list[dict], list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The crop records, crops, region masks and subtype numbers of a crop data set."""
    records = read_manifest(dataset)
    if len(records) < config.batch_size:
        raise DefectkitError(f"{dataset}: {len(records)} crops, fewer than one batch of {config.batch_size}")
    subtypes = sorted({r["subtype"] for r in records})
    labels = np.array([subtypes.index(r["subtype"]) for r in records])
    if config.method == "supcon" and len(subtypes) < 2:
        raise DefectkitError(f"{dataset}: SupCon needs at least two subtypes, found {subtypes}")
    crops = [read_image(r["crop_path"]) for r in records]
    masks = [read_mask(r["mask_path"]) if r.get("mask_path") else np.ones(c.shape[:2], bool) for r, c in zip(records, crops)]
    return records, crops, masks, labels


def is_crop_dataset(dataset: str | Path) -> bool:
    path = Path(dataset)
    return path.name == MANIFEST or (path / MANIFEST).is_file()


def _read_patches(folder, config: PretrainConfig, exclude: Iterable[str | Path]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, dict]:
    """Random patches of the images in ``folder`` (not those of ``exclude``): crops, full masks,
    no labels, and what was read."""
    if not Path(folder).is_dir():
        raise DefectkitError(f"{folder}: neither a crop data set (with {MANIFEST}) nor a folder of images")
    if config.method != "simclr":
        raise DefectkitError("a folder of images has no labels: pretrain it with --method simclr")
    left_out = held_out_images(exclude)
    images = image_files(folder, left_out)
    if not images:
        raise DefectkitError(f"{folder}: no images to pretrain on" + (f" ({len(left_out)} excluded)" if left_out else ""))
    patches, sources = sample_patches(images, config.patch_size, config.patches_per_image, config.seed, config.max_patch_size)
    if len(patches) < config.batch_size:
        raise DefectkitError(f"{folder}: {len(patches)} patches from {len(set(sources))} images, fewer than one batch of "
                             f"{config.batch_size}; raise --patches-per-image or add images")
    masks = [np.ones(p.shape[:2], bool) for p in patches]  # no regions: the whole patch
    data = {"dataset": str(folder), "kind": "image patches", "crops": len(patches), "images": len(set(sources)),
            "excluded_images": len(left_out), "patch_size": config.patch_size, "max_patch_size": config.max_patch_size}
    return patches, masks, np.zeros(len(patches), int), data


def _resume(state_path: Path, config: PretrainConfig, parts: dict, device) -> tuple[int, list[float]]:
    """(first epoch to run, loss history so far): from a state an interrupted run left, or afresh."""
    if not state_path.is_file():
        return 0, []
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise DefectkitError(f"{state_path}: cannot read the resume state ({load_failure(exc)}); delete it to start afresh") from exc
    if state.get("config") != json.dumps(asdict(config), sort_keys=True):
        raise DefectkitError(f"{state_path}: a resume state for other settings; delete it to start afresh")
    for name, part in parts.items():
        part.load_state_dict(state[name])
    return int(state["epoch"]), [float(x) for x in state["history"]]


def _epoch(batches, model, head, criterion, optimizer, schedule: BudgetSchedule, method: str, device) -> float:
    """One pass over the batches of two views, or what is left of the budget; the mean loss."""
    total, count = 0.0, 0
    for first, second, batch_labels in batches:
        if schedule.done():
            break
        schedule.apply(optimizer)
        views = torch.cat([first, second]).to(device)
        projections = nn.functional.normalize(head(model(views)), dim=1)
        if method == "simclr":
            pair = torch.arange(len(first))
            targets = torch.cat([pair, pair])
        else:
            targets = torch.cat([batch_labels, batch_labels])
        loss = criterion(projections, targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.advance()
        total, count = total + loss.item(), count + 1
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
