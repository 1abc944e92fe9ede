"""The segmentation network: a segmentation-models-pytorch decoder over a timm encoder (``tu-<name>``).

It is always built with ``encoder_weights=None`` (smp would otherwise download ImageNet weights);
the encoder starts from random weights or from a defectkit backbone file (a contrastively pretrained
timm model of the same name, such as the shipped ``checkpoints/defectkit-backbone.safetensors``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from defectkit.errors import DefectkitError
from defectkit.segmenter.config import ARCHITECTURES, NetworkSpec

STRIDE = 32  # inputs are padded to a multiple of the encoder's output stride


def build_network(spec: NetworkSpec) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    channels = list(spec.decoder_channels)
    options = {
        "unet": lambda: {"decoder_channels": channels, "encoder_depth": len(channels)},
        "fpn": lambda: {"decoder_pyramid_channels": channels[0], "decoder_segmentation_channels": channels[-1]},
        "deeplabv3plus": lambda: {"decoder_channels": channels[0]},
    }[spec.architecture]()
    try:
        return getattr(smp, ARCHITECTURES[spec.architecture])(
            encoder_name=f"tu-{spec.encoder}", encoder_weights=None, in_channels=3, classes=spec.classes, **options
        )
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DefectkitError(f"cannot build a {spec.architecture} over timm encoder {spec.encoder!r}: {exc}") from exc


def hub_weights(encoder: str) -> dict:
    """timm's pretrained (ImageNet) weights of ``encoder``, downloaded from the hub (online machines)."""
    import timm

    try:
        return timm.create_model(encoder, pretrained=True).state_dict()
    except Exception as exc:  # no network, no such weights, a hub error: each raises its own type
        raise DefectkitError(f"cannot get timm's pretrained weights for encoder {encoder!r} ({type(exc).__name__}: {exc}); "
                             "on a machine without internet pass a weights file to --backbone-weights") from exc


def init_encoder(network: torch.nn.Module, spec: NetworkSpec, weights: str | Path) -> None:
    """Start the encoder from timm's pretrained weights (``"hub"``, online) or a defectkit backbone
    file (a timm model of the same name). smp's timm
    encoder is a features-only copy of that model: every one of its weights must be in the file; the
    file's head and last stage, which a features-only model lacks, are left out."""
    from defectkit.embed.backbone import read_weights
    from defectkit.state_dicts import mismatch

    model = getattr(network.encoder, "model", None)
    if model is None:
        raise DefectkitError(f"the {spec.architecture} encoder is not a timm model; it cannot start from {weights}")
    state = hub_weights(spec.encoder) if str(weights) == "hub" else read_weights(Path(weights), spec.encoder)
    expected = model.state_dict()
    problems = mismatch({k: v for k, v in state.items() if k in expected}, expected)
    if problems:
        raise DefectkitError(f"{weights}: weights do not fit encoder {spec.encoder!r}: {problems}. "
                             "Pass the backbone file that was trained for this encoder, or --encoder of that file.")
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
