"""The segmentation network: a segmentation-models-pytorch decoder over a timm encoder (``tu-<name>``).

It is always built with ``encoder_weights=None`` (smp would otherwise download ImageNet weights);
the encoder starts from the ImageNet weights a pinned package carries (``"imagenet"``, through
:mod:`defectkit.pretrained`), from a defectkit backbone file (a timm model of the same name), from
timm's hub (``"hub"``, online machines) or from random weights (``"random"``).

The network is kept in channels-last memory order, which runs convolutions 1.5-2x faster on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from defectkit.errors import DefectkitError
from defectkit.segmenter.config import ARCHITECTURES, NetworkSpec

STRIDE = 32  # inputs are padded to a multiple of the encoder's output stride


def build_network(spec: NetworkSpec) -> torch.nn.Module:
    """The network ``spec`` describes, with random weights; ``network.normalisation`` is the
    (mean, std) its inputs must be normalised with."""
    import segmentation_models_pytorch as smp

    channels = list(spec.decoder_channels)
    options = {
        "unet": lambda: {"decoder_channels": channels, "encoder_depth": len(channels)},
        "fpn": lambda: {"decoder_pyramid_channels": channels[0], "decoder_segmentation_channels": channels[-1]},
        "deeplabv3plus": lambda: {"decoder_channels": channels[0]},
    }[spec.architecture]()
    try:
        network = getattr(smp, ARCHITECTURES[spec.architecture])(
            encoder_name=f"tu-{spec.encoder}", encoder_weights=None, in_channels=3, classes=spec.classes, **options
        )
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DefectkitError(f"cannot build a {spec.architecture} over timm encoder {spec.encoder!r}: {exc}") from exc
    network.normalisation = (spec.mean, spec.std)
    return network.to(memory_format=torch.channels_last)


def hub_weights(encoder: str) -> dict:
    """timm's pretrained (ImageNet) weights of ``encoder``, downloaded from the hub (online machines)."""
    import timm

    try:
        return timm.create_model(encoder, pretrained=True).state_dict()
    except Exception as exc:  # no network, no such weights, a hub error: each raises its own type
        raise DefectkitError(f"cannot get timm's pretrained weights for encoder {encoder!r} ({type(exc).__name__}: {exc}); "
                             "on a machine without internet use --encoder-weights imagenet (packaged) or a weights file") from exc


def init_encoder(network: torch.nn.Module, spec: NetworkSpec, weights: str | Path) -> None:
    """Start the encoder from packaged ImageNet weights (``"imagenet"``), timm's hub (``"hub"``,
    online) or a defectkit backbone file (a timm model of the same name). smp's timm encoder is a
    features-only copy of that model: every one of its weights must be in the source; the source's
    head and last stage, which a features-only model lacks, are left out."""
    from defectkit.embed.backbone import read_weights
    from defectkit.pretrained import IMAGENET, imagenet_state
    from defectkit.state_dicts import mismatch

    model = getattr(network.encoder, "model", None)
    if model is None:
        raise DefectkitError(f"the {spec.architecture} encoder is not a timm model; it cannot start from {weights}")
    sources = {"hub": hub_weights, IMAGENET: imagenet_state}
    state = sources[str(weights)](spec.encoder) if str(weights) in sources else read_weights(Path(weights), spec.encoder)
    expected = model.state_dict()
    problems = mismatch({k: v for k, v in state.items() if k in expected}, expected)
    if problems:
        raise DefectkitError(f"{weights}: weights do not fit encoder {spec.encoder!r}: {problems}. "
                             "Pass the backbone file that was trained for this encoder, or --encoder of that file.")
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
