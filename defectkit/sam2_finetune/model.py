"""SAM2 models for fine-tuning: config names, checkpoints in and out, and the differentiable
forward pass that mirrors ``SAM2ImagePredictor`` (encode an image once, answer a batch of prompts).

Checkpoints use the stock layout, ``{"model": state_dict}``, so ``sam2.build_sam.build_sam2`` loads
what we save. We add one more top-level key, ``"defectkit"`` (plain strings and numbers: how the model
was trained and on which images), which ``build_sam2`` ignores.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defectkit.errors import DefectkitError
from defectkit.images import atomic_write_bytes
from defectkit.state_dicts import mismatch

DEFAULT_CONFIG = "sam2.1_hiera_t"
METADATA_KEY = "defectkit"


def _package_configs() -> dict[str, str]:
    """Stem -> config name as ``build_sam2`` takes it, for every model config the sam2 package ships."""
    import sam2

    root = Path(sam2.__file__).parent / "configs"
    return {p.stem: f"configs/{sub}/{p.name}" for sub in ("sam2", "sam2.1") for p in sorted((root / sub).glob("*.yaml"))}


def resolve_config(name: str) -> str:
    """``sam2.1_hiera_t``, ``sam2.1_hiera_t.yaml`` or ``configs/sam2.1/sam2.1_hiera_t.yaml`` -> the
    name ``build_sam2`` takes."""
    configs = _package_configs()
    stem = Path(str(name)).name.removesuffix(".yaml")
    if stem not in configs:
        raise DefectkitError(f"unknown SAM2 config {name!r}; choose one of: {', '.join(configs)}")
    return configs[stem]


def expected_checkpoint_name(config: str) -> str:
    """The file name Meta publishes for a config (``sam2.1_hiera_tiny.pt`` for ``sam2.1_hiera_t``)."""
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    names = {cfg: ckpt for cfg, ckpt in HF_MODEL_ID_TO_FILENAMES.values()}
    return names.get(config, f"{Path(config).stem}.pt")


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint's top-level dict (tensors and plain values only: ``weights_only=True``);
    ``mmap`` maps the weights instead of reading them (for a look at the metadata)."""
    path = Path(path)
    if not path.is_file():
        raise DefectkitError(f"SAM2 checkpoint not found: {path}")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)  # an old-format file cannot be mapped
    except Exception as exc:  # torch raises several types for a file that is no checkpoint
        raise DefectkitError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise DefectkitError(f"{path}: not a SAM2 checkpoint: expected a dict with a 'model' state dict, as Meta's files have")
    return data


def read_metadata(path: str | Path) -> dict:
    """What defectkit recorded when it saved this checkpoint (empty for Meta's own files)."""
    return dict(read_checkpoint(path, mmap=True).get(METADATA_KEY) or {})


def build(config: str, image_size: int | None = None):
    """The model of ``config`` with random weights, on the CPU, in eval mode."""
    from sam2.build_sam import build_sam2

    overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
    return build_sam2(resolve_config(config), ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)


def load_model(config: str, checkpoint: str | Path, device: str | torch.device = "cpu", image_size: int | None = None):
    """Build ``config`` and load ``checkpoint`` into it, strictly, with errors that say what is wrong.

    A checkpoint is always required: fine-tuning starts from pretrained weights. ``image_size``
    overrides the model's input side (1024 for the published models): smaller is much faster on a
    CPU, and a checkpoint trained so should be used at the same size.
    """
    config_name = resolve_config(config)
    path = Path(checkpoint)
    if not path.is_file():
        raise DefectkitError(
            f"SAM2 checkpoint not found: {path}. Fine-tuning and evaluation start from a SAM2 checkpoint "
            f"that matches --sam2-config {Path(config_name).stem} (Meta publishes it as "
            f"{expected_checkpoint_name(config_name)}); put it there or pass its path with --sam2-checkpoint"
        )
    state = read_checkpoint(path)["model"]
    model = build(config, image_size)
    problems = mismatch(state, model.state_dict())
    if problems:
        raise DefectkitError(
            f"{path} does not match SAM2 config {Path(config_name).stem}: {problems}. "
            f"Pass the --sam2-config of the model size the checkpoint was made for "
            f"(the file for this config is {expected_checkpoint_name(config_name)})"
        )
    model.load_state_dict(state)
    return model.to(device).eval()


def save_checkpoint(model, path: str | Path, metadata: dict | None = None) -> Path:
    """Write ``{"model": state_dict, "defectkit": metadata}`` atomically; ``build_sam2`` loads it."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"model": state, METADATA_KEY: dict(metadata or {})}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


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
