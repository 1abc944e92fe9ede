"""Crops -> embedding vectors with a timm backbone: built once, then cheap batched calls."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from defectkit.embed.backbone import DEFAULT_BACKBONE, build_backbone, resolve_weights, sidecar, weights_sha256
from defectkit.embed.cache import EmbeddingCache, content_key
from defectkit.devices import pick_device
from defectkit.errors import DefectkitError
from defectkit.pretrained import DEFAULT_IMAGENET_BACKBONE, IMAGENET
from defectkit.images import read_image, read_mask
from defectkit.streaming import ahead

DEFAULT_IMAGE_SIZE = 96
# How the region's mask reaches the backbone:
#   none    - the crop as it is, the mask unused;
#   channel - gray crop in the first two channels, the mask in the third;
#   dim     - the crop with everything outside the (slightly grown) region at half brightness.
MASK_MODES = ("none", "channel", "dim")
DEFAULT_MASK_MODE = "none"


class Embedder:
    """A timm backbone (any name ``timm.create_model`` accepts) that turns crops into vectors.

    ``weights``: ``"default"`` (the project checkpoint if present, else random with a warning), a
    file path, ``"hub"`` (timm's pretrained weights) or ``"random"``. Preprocessing follows the
    model's ``timm.data.resolve_data_config`` (mean, std), at ``image_size`` pixels.
    """

    def __init__(
        self,
        backbone: str | None = None,
        weights: str | Path | None = "default",
        image_size: int | None = None,
        mask_mode: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
        seed: int = 0,
    ):
        from timm.data import resolve_data_config

        resolved = resolve_weights(weights)
        hints = {} if resolved in ("random", "hub", IMAGENET) else sidecar(resolved)
        fallback = DEFAULT_IMAGENET_BACKBONE if resolved == IMAGENET else DEFAULT_BACKBONE
        self.backbone = backbone or hints.get("backbone") or hints.get("model") or fallback
        self.image_size = int(image_size or hints.get("image_size") or DEFAULT_IMAGE_SIZE)
        self.mask_mode = mask_mode or hints.get("mask_mode") or DEFAULT_MASK_MODE
        if self.mask_mode not in MASK_MODES:
            raise DefectkitError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {self.mask_mode!r}")
        if self.image_size < 16:
            raise DefectkitError(f"image_size must be at least 16 px, got {self.image_size}")
        self.batch_size = int(batch_size)
        self.device = pick_device(device)
        self.weights, self.seed = resolve_weights(weights), seed  # what a worker needs to build the same embedder
        self.model, self.source = build_backbone(self.backbone, weights, seed)
        self.model.to(self.device)
        config = resolve_data_config(model=self.model)
        self.mean = np.asarray(config["mean"], dtype=np.float32) * 255.0
        self.std = np.asarray(config["std"], dtype=np.float32) * 255.0
        self.weights_sha256 = weights_sha256(self.model)
        self.dim = int(self._forward(np.zeros((1, 3, self.image_size, self.image_size), np.float32)).shape[1])

    @property
    def identity(self) -> dict:
        """What determines the vectors: equal identities give equal embeddings for equal crops."""
        return {
            "backbone": self.backbone,
            "weights_sha256": self.weights_sha256,
            "image_size": self.image_size,
            "mask_mode": self.mask_mode,
        }

    def prepare(self, crop: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """One uint8 RGB crop (+ its mask) -> a normalised (3, S, S) float32 array."""
        size = self.image_size
        interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
        image = cv2.resize(crop, (size, size), interpolation=interpolation).astype(np.float32)
        # built channels first, then normalised: the same float32 values, faster (NumPy is slow at
        # arithmetic over interleaved pixels)
        planes = None
        if self.mask_mode != "none":
            if mask is None:
                mask = np.ones(crop.shape[:2], dtype=bool)
            region = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
            if self.mask_mode == "channel":
                gray = (image[:, :, 0] + image[:, :, 1] + image[:, :, 2]) / np.float32(3)  # image.mean(axis=2), without its slow reduction
                planes = np.stack([gray, gray, region.astype(np.float32) * 255.0])
            else:
                grown = cv2.dilate(region, np.ones((5, 5), np.uint8)).astype(bool)
                image[~grown] *= 0.5
        if planes is None:
            planes = np.ascontiguousarray(image.transpose(2, 0, 1))
        return (planes - self.mean[:, None, None]) / self.std[:, None, None]

    def embed(self, crops: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        """Embed in-memory crops (uint8 RGB) and their boolean masks; returns (n, dim) float32."""
        masks = masks if masks is not None else [None] * len(crops)
        size = self.batch_size
        starts = range(0, len(crops), size)
        return self._embed_batches(lambda start: self._batch(crops[start : start + size], masks[start : start + size]), starts)

    def _batch(self, crops: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> np.ndarray:
        return np.stack([self.prepare(c, m) for c, m in zip(crops, masks)])

    def _embed_batches(self, load, parts: Sequence) -> np.ndarray:
        """The vectors of ``load(part)`` (a prepared batch) for each part, in order. With more than
        one batch, a worker thread loads the next batch while the backbone runs on this one (the
        backbone uses one CPU thread, see :mod:`defectkit.threads`)."""
        batches = ahead(load, parts, depth=1, workers=int(len(parts) > 1))
        return np.concatenate([np.zeros((0, self.dim), np.float32), *(self._forward(batch) for batch in batches)])

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        # channels_last (the layout stacking HWC crops used to give): faster convolutions on CPU
        features = self.model(torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last))
        return features.float().cpu().numpy()

    def embed_records(
        self,
        records: Sequence[dict],
        cache: EmbeddingCache | None = None,
        progress: bool = False,
        embed_files=None,
    ) -> np.ndarray:
        """Embed the crops of manifest records (``crop_path``, optional ``mask_path``), using the cache.
        ``embed_files(records, progress)``: what embeds the records the cache lacks (default
        :meth:`embed_files`, here; the Ray engine runs them on its actors)."""
        keys = [content_key(r["crop_path"], r.get("mask_path")) for r in records]
        known = cache.load(self.identity) if cache is not None else {}
        todo = sorted({k: i for i, k in enumerate(keys) if k not in known}.items(), key=lambda item: item[1])
        if todo:
            vectors = (embed_files or self.embed_files)([records[i] for _, i in todo], progress)
            new_keys = [k for k, _ in todo]
            known.update(zip(new_keys, vectors))
            if cache is not None:
                cache.save(self.identity, new_keys, vectors)
        return np.stack([known[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, self.dim), np.float32)

    def embed_files(self, records: Sequence[dict], progress: bool = False) -> np.ndarray:
        """The vectors of the records' crop files (and masks), in order, no cache."""
        chunks = [records[start : start + self.batch_size] for start in range(0, len(records), self.batch_size)]

        def load(chunk: Sequence[dict]) -> np.ndarray:
            crops = [read_image(r["crop_path"]) for r in chunk]
            masks = [read_mask(r["mask_path"]) if r.get("mask_path") and self.mask_mode != "none" else None
                     for r in chunk]  # mask_mode "none" does not look at masks: do not decode them
            bar.update(len(chunk))
            return self._batch(crops, masks)

        with tqdm(total=len(records), desc="embed", unit="crop", disable=not progress or not records) as bar:
            return self._embed_batches(load, chunks)
