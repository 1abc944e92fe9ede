"""Whole images through the segmentation network, and its probability map into regions.

An image no larger than ``tile`` goes through in one pass, padded (mirrored) to a multiple of the
encoder's stride. A larger one is cut into overlapping tiles of ``tile`` pixels; each pixel takes
its probability from the one tile whose inner part holds it (the overlap's outer halves are
dropped), so memory stays bounded by the tile and a border effect never reaches a kept pixel.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from scipy import ndimage

from defectkit.geometry import Region
from defectkit.pretrained import IMAGENET_MEAN, IMAGENET_STD
from defectkit.propose.masks import tile_boxes
from defectkit.segmenter.network import STRIDE


@dataclass(frozen=True)
class Postprocess:
    """How a probability map becomes regions: pixels above ``threshold`` that are connected
    (8-neighbours) to a pixel above ``seed_threshold`` (hysteresis), in regions of ``min_area``
    pixels or more."""

    threshold: float = 0.5
    seed_threshold: float = 0.5
    min_area: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


def to_input(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W) normalised by ``mean`` and ``std`` (0-1 scale)."""
    scale = np.float32(255)
    return ((image.astype(np.float32) - np.asarray(mean, np.float32) * scale) / (np.asarray(std, np.float32) * scale)).transpose(2, 0, 1)


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (at least one pixel a side); area averaging when shrinking."""
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _pad_to_stride(array: np.ndarray) -> np.ndarray:
    """(C, H, W) mirrored at the bottom and right up to multiples of the stride."""
    _, height, width = array.shape
    pad_h, pad_w = -height % STRIDE, -width % STRIDE
    if not pad_h and not pad_w:
        return array
    return np.pad(array, ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.inference_mode()
def probability_map(network: torch.nn.Module, image: np.ndarray, tile: int = 512, overlap: int = 64,
                    device: torch.device | None = None, scale: float = 1.0) -> np.ndarray:
    """Per-pixel defect probability (float32, H x W) for a uint8 RGB image; the network sees the
    image resized by ``scale`` (tiles are of the resized image) and its map is resized back, and
    normalised as ``build_network`` recorded on it."""
    if scale != 1.0:
        height, width = image.shape[:2]
        probability = probability_map(network, rescale(image, scale), tile, overlap, device)
        return cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
    device = device or next(network.parameters()).device
    height, width = image.shape[:2]
    planes = to_input(image, *network.normalisation)
    if max(height, width) <= tile:
        return _forward(network, [_pad_to_stride(planes)], device)[0][:height, :width]
    out = np.zeros((height, width), dtype=np.float32)
    margin = overlap // 2
    for x0, y0, x1, y1 in tile_boxes(height, width, tile, overlap / tile):
        probability = _forward(network, [_pad_to_stride(planes[:, y0:y1, x0:x1])], device)[0]
        top = y0 + (margin if y0 > 0 else 0)
        left = x0 + (margin if x0 > 0 else 0)
        bottom = y1 - (margin if y1 < height else 0)
        right = x1 - (margin if x1 < width else 0)
        out[top:bottom, left:right] = probability[top - y0 : bottom - y0, left - x0 : right - x0]
    return out


def _forward(network: torch.nn.Module, batch: list[np.ndarray], device: torch.device) -> np.ndarray:
    inputs = torch.from_numpy(np.stack(batch)).to(device).contiguous(memory_format=torch.channels_last)
    with autocast(device):
        logits = network(inputs)
    return torch.sigmoid(logits[:, 0].float()).cpu().numpy()


def components(probability: np.ndarray, threshold: float) -> tuple[list[Region], np.ndarray]:
    """The 8-connected regions above ``threshold`` and the highest probability inside each."""
    above = (probability >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=8)
    if count <= 1:
        return [], np.zeros(0, np.float32)
    peaks = np.asarray(ndimage.maximum(probability, labels, np.arange(1, count)), dtype=np.float32)
    regions = []
    for i in range(1, count):
        x, y, w, h = (int(v) for v in stats[i, :4])
        regions.append(Region(x, y, labels[y : y + h, x : x + w] == i))
    return regions, peaks


def keep(regions: list[Region], peaks: np.ndarray, post: Postprocess) -> list[Region]:
    """The regions that reach ``seed_threshold`` and ``min_area``, largest first."""
    kept = [r for r, peak in zip(regions, peaks) if peak >= post.seed_threshold and r.area >= post.min_area]
    return sorted(kept, key=lambda r: -r.area)


def regions_from_probability(probability: np.ndarray, post: Postprocess) -> list[Region]:
    return keep(*components(probability, post.threshold), post)
