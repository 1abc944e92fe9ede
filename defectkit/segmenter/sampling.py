"""Training crops: most holding a true defect, the rest anywhere (mostly clean surface), each
scaled, flipped, turned by a multiple of 90 degrees and jittered in brightness and contrast.

Batch ``step`` of a run is drawn with a generator seeded by ``(seed, step)``: any DataLoader worker
draws the same batch for the same step, and a resumed run goes on with the batches it would have
drawn. Nothing here knows the material: the same recipe serves tiles, steel, wafers or textiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from defectkit.pretrained import IMAGENET_MEAN, IMAGENET_STD
from defectkit.segmenter.data import SegImage
from defectkit.segmenter.inference import to_input


@dataclass(frozen=True)
class Augment:
    scale: tuple[float, float] = (0.75, 1.33)  # the crop window, relative to the crop size
    contrast: float = 0.25  # gain drawn from 1 +- this
    brightness: float = 20.0  # offset drawn from +- this (grey levels)


class CropBatches(torch.utils.data.Dataset):
    """Item ``step``: that step's batch as tensors (inputs N x 3 x S x S, targets N x 1 x S x S)."""

    def __init__(self, images: list[SegImage], size: int, count: int, defect_share: float, seed: int,
                 normalisation: tuple = (IMAGENET_MEAN, IMAGENET_STD)):
        self.images, self.size, self.count, self.defect_share = images, size, count, defect_share
        self.seed, self.normalisation = seed, normalisation

    def __len__(self) -> int:
        return 2**62  # one item per step; the training loop decides when to stop

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(step)])
        inputs, targets = sample_batch(self.images, self.size, self.count, self.defect_share, rng, normalisation=self.normalisation)
        return torch.from_numpy(inputs), torch.from_numpy(targets)


def batch_loader(batches: CropBatches, first_step: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches from ``first_step`` on, drawn by ``workers`` processes (0: in this one) ahead of the network."""
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(first_step, len(batches)), num_workers=workers,
                                       prefetch_factor=4 if workers else None, persistent_workers=False)


def sample_batch(images: list[SegImage], size: int, count: int, defect_share: float, rng: np.random.Generator,
                 augment: Augment = Augment(), normalisation: tuple = (IMAGENET_MEAN, IMAGENET_STD)) -> tuple[np.ndarray, np.ndarray]:
    """``count`` crops of ``size`` px: normalised inputs (N, 3, S, S) and targets (N, 1, S, S)."""
    defect_images = [i for i in images if i.regions]
    inputs = np.empty((count, 3, size, size), np.float32)
    targets = np.empty((count, 1, size, size), np.float32)
    for n in range(count):
        centred = bool(defect_images) and rng.random() < defect_share
        item = defect_images[rng.integers(len(defect_images))] if centred else images[rng.integers(len(images))]
        image, target = crop(item, size, centred, rng, augment)
        inputs[n] = to_input(image, *normalisation)
        targets[n, 0] = target
    return inputs, targets


def crop(item: SegImage, size: int, centred: bool, rng: np.random.Generator, augment: Augment) -> tuple[np.ndarray, np.ndarray]:
    height, width = item.target.shape
    window = max(8, int(round(size * rng.uniform(*augment.scale))))
    if centred:
        region = item.regions[rng.integers(len(item.regions))]
        ys, xs = np.nonzero(region.mask)
        k = rng.integers(len(ys))
        # the defect anywhere in the window (not only at its centre): a network that saw defects
        # mostly mid-crop learns that the middle of its input is a defect, and marks it everywhere
        reach = max(window // 2 - 8, 0)
        jitter = rng.integers(-reach, reach + 1, size=2)
        cy, cx = region.y + ys[k] + jitter[0], region.x + xs[k] + jitter[1]
    else:
        cy, cx = rng.integers(height), rng.integers(width)
    y0, x0 = int(cy) - window // 2, int(cx) - window // 2
    image = _window(item.image, y0, x0, window)
    target = _window(item.target.view(np.uint8), y0, x0, window)
    if window != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if window > size else cv2.INTER_LINEAR)
        target = cv2.resize(target, (size, size), interpolation=cv2.INTER_NEAREST)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    if rng.random() < 0.5:
        image, target = image[::-1], target[::-1]
    turns = int(rng.integers(4))
    image, target = np.rot90(image, turns), np.rot90(target, turns)
    gain = 1 + rng.uniform(-augment.contrast, augment.contrast)
    offset = rng.uniform(-augment.brightness, augment.brightness)
    mean = float(image.mean())
    image = np.clip((image.astype(np.float32) - mean) * gain + mean + offset, 0, 255).astype(np.uint8)
    return image, target.astype(np.float32)


def _window(array: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """``array[y0:y0+side, x0:x0+side]``, mirrored where the window leaves the image."""
    height, width = array.shape[:2]
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = max(0, y0 + side - height), max(0, x0 + side - width)
    part = array[max(0, y0) : min(height, y0 + side), max(0, x0) : min(width, x0 + side)]
    if top or left or bottom or right:
        pad = ((top, bottom), (left, right)) + ((0, 0),) * (array.ndim - 2)
        part = np.pad(part, pad, mode="symmetric")
    return part
