"""The differentiable forward pass of SAM2 that mirrors ``SAM2ImagePredictor`` (encode an image
once, answer a batch of prompts), for fine-tuning. Models are built and checkpoints read and written
by :mod:`defectkit.sam2_model`."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from defectkit.sam2_model import (  # noqa: F401  (the fine-tuning API names them here too)
    DEFAULT_CONFIG,
    build,
    expected_checkpoint_name,
    load_model,
    read_checkpoint,
    read_metadata,
    resolve_config,
    save_checkpoint,
)

# --- the forward pass, as SAM2ImagePredictor runs it, but differentiable ------------------------


@dataclass
class Features:
    """One image's encoding: what ``SAM2ImagePredictor.set_image`` keeps (batch dimension 1)."""

    image_embed: torch.Tensor
    high_res: list[torch.Tensor]
    orig_hw: tuple[int, int]

    def to(self, device, dtype: torch.dtype) -> "Features":
        return Features(
            self.image_embed.detach().to(device=device, dtype=dtype, copy=True),
            [f.detach().to(device=device, dtype=dtype, copy=True) for f in self.high_res],
            self.orig_hw,
        )

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.image_embed, *self.high_res])


@contextlib.contextmanager
def quiet_jit():
    """sam2's transforms call ``torch.jit.script``, which newer torch warns is deprecated (harmless)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
        yield


def transforms_for(model):
    from sam2.utils.transforms import SAM2Transforms

    with quiet_jit():
        return SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)


def encode(model, images: list[np.ndarray], transforms=None) -> list[Features]:
    """Run the image encoder on RGB uint8 images (any sizes) as ``set_image_batch`` does.

    Gradients flow when enabled (a trainable image encoder); callers wrap it in ``torch.no_grad``
    when the encoder is frozen.
    """
    transforms = transforms or transforms_for(model)
    batch = transforms.forward_batch(list(images)).to(model.device)
    backbone_out = model.forward_image(batch)
    _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    feats = [f.permute(1, 2, 0).reshape(len(images), -1, *size) for f, size in zip(vision_feats, feat_sizes)]
    return [
        Features(feats[-1][i : i + 1], [f[i : i + 1] for f in feats[:-1]], tuple(image.shape[:2]))
        for i, image in enumerate(images)
    ]


def to_model_frame(coords: np.ndarray, orig_hw: tuple[int, int], image_size: int) -> np.ndarray:
    """Pixel coordinates (x, y) of an image of size ``orig_hw`` -> the model's square input frame,
    as ``SAM2Transforms.transform_coords(normalize=True)`` maps them."""
    height, width = orig_hw
    scale = np.array([image_size / width, image_size / height], dtype=np.float32)
    return np.asarray(coords, dtype=np.float32) * scale


def decode(model, features: Features, coords: torch.Tensor, labels: torch.Tensor):
    """All mask-decoder outputs for a batch of N prompts against one image.

    ``coords`` (N, K, 2) in the model frame, ``labels`` (N, K): 1 positive, 0 negative point, 2 and 3
    a box's corners (boxes first, as the predictor sends them), -1 padding. Returns the low-resolution
    logits of all four mask tokens (N, 4, h, w), their predicted IoUs (N, 4) and object-score
    logits (N, 1). Token 0 is the single-mask output, tokens 1-3 the multimask outputs.
    """
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    masks, iou, _, object_score = model.sam_mask_decoder.predict_masks(
        image_embeddings=features.image_embed,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        repeat_image=True,
        high_res_features=features.high_res,
    )
    return masks, iou, object_score


def image_predictor(model, **kwargs):
    """A ``SAM2ImagePredictor`` that also works at input sizes other than 1024 (it hard-codes the
    backbone's feature sizes for 1024)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    with quiet_jit():
        predictor = SAM2ImagePredictor(model, **kwargs)
    side = model.image_size
    predictor._bb_feat_sizes = [(side // 4, side // 4), (side // 8, side // 8), (side // 16, side // 16)]
    return predictor
