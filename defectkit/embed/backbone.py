"""Build a timm backbone (features only) and put weights in it: from a file, timm's sources, or random.

Weights come from, in order of preference:

- a local file (``weights=PATH``): safetensors, or a torch / timm state dict read with
  ``weights_only=True`` (no code can run while it loads);
- ImageNet weights that a pinned package carries (``weights="imagenet"``, :mod:`defectkit.pretrained`),
  for the architectures listed there;
- timm's own sources (``weights="hub"``, or a model name such as ``hf-hub:...`` or ``local-dir:...``),
  which need the weights to be reachable;
- random initialisation (``weights="random"``), for tests only: it warns, because random features
  classify poorly.

``weights="default"`` takes :data:`DEFAULT_WEIGHTS` when that file exists and random weights (with a
loud warning) until then. A JSON file beside a weights file (``NAME.json`` for ``NAME.safetensors``)
may name the ``backbone`` (or ``model``), ``image_size`` and ``mask_mode`` it was trained for; they
are the defaults when the caller does not name them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from defectkit.errors import DefectkitError
from defectkit.pretrained import IMAGENET, PACKAGED, imagenet_state
from defectkit.state_dicts import cpu_state, load_failure, mismatch

DEFAULT_BACKBONE = "mobilenetv3_small_100"
# The project's own contrastively pretrained backbone; used whenever this file exists.
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "checkpoints" / "defectkit-backbone.safetensors"


class RandomWeightsWarning(UserWarning):
    """The backbone has random weights: embeddings carry little more than chance structure."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from: ``kind`` is file, imagenet (packaged), timm or random."""

    kind: str
    path: str | None = None
    seed: int | None = None

    def describe(self) -> str:
        if self.kind in ("file", "imagenet"):
            return self.path or ""
        if self.kind == "random":
            return f"random (seed {self.seed})"
        return "timm pretrained"


def sidecar(weights: str | Path) -> dict:
    """The JSON beside a weights file (``NAME.json``), or {} when there is none."""
    path = Path(weights).with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DefectkitError(f"{path}: not valid JSON ({exc.msg})") from exc
    return data if isinstance(data, dict) else {}


def resolve_weights(weights: str | Path | None) -> str | Path:
    """``"default"``/None -> DEFAULT_WEIGHTS when present, else ``"random"``; anything else as given."""
    if weights in (None, "default"):
        return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else "random"
    return weights


def build_backbone(name: str, weights: str | Path | None = "default", seed: int = 0) -> tuple[torch.nn.Module, WeightsSource]:
    """A timm model with ``num_classes=0`` (pooled features), in eval mode, and where its weights came from."""
    import timm

    default = weights in (None, "default")
    weights = resolve_weights(weights)
    timm_source = weights == "hub" or name.startswith(("hf-hub:", "local-dir:", "hf_hub:"))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=timm_source, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Unknown" in str(exc):
            raise DefectkitError(f"unknown backbone {name!r}: {exc}; see timm.list_models()") from exc
        raise DefectkitError(f"backbone {name!r}: cannot create it ({exc})") from exc
    except (OSError, ValueError) as exc:  # offline hub, missing local-dir, bad name
        raise DefectkitError(f"backbone {name!r}: cannot get its weights from timm's sources ({exc})") from exc
    if timm_source:
        source = WeightsSource("timm")
    elif weights == IMAGENET:
        state = imagenet_state(name)
        load_state(model, name, state, f"packaged ImageNet weights of {name}")
        found = PACKAGED[name]
        source = WeightsSource("imagenet", path=f"imagenet: {found.package}=={found.version}")
    elif weights == "random":
        reason = f"no default backbone weights at {DEFAULT_WEIGHTS}: " if default else ""
        warnings.warn(
            f"{reason}backbone {name!r} has RANDOM weights (seed {seed}); random features classify "
            "poorly, pass --backbone-weights PATH for real use",
            RandomWeightsWarning,
            stacklevel=2,
        )
        source = WeightsSource("random", seed=seed)
    else:
        load_weights(model, name, Path(weights))
        source = WeightsSource("file", path=str(weights))
    return model.eval(), source


def load_weights(model: torch.nn.Module, name: str, path: Path) -> None:
    """Load a weights file into ``model``; raise DefectkitError naming the file and the model if they do not fit."""
    load_state(model, name, read_weights(path, name), str(path))


def load_state(model: torch.nn.Module, name: str, state: dict, where: str) -> None:
    """Load ``state`` (a classifier head, which a pooled-features model lacks, is dropped) into ``model``."""
    head = str(getattr(model, "pretrained_cfg", {}).get("classifier", "classifier"))
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    problems = mismatch(state, model.state_dict())
    if problems:
        raise DefectkitError(f"{where}: weights do not fit backbone {name!r}: {problems}. Pass the --backbone the weights were trained for.")
    model.load_state_dict(state, strict=True)


def read_weights(path: Path, name: str) -> dict:
    """A weights file's tensors by name (safetensors, or a torch state dict read without pickle's code)."""
    from timm.models import load_state_dict

    if not path.is_file():
        raise DefectkitError(f"backbone weights file not found: {path} (for backbone {name!r})")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # safetensors, torch and pickle each raise their own types
        raise DefectkitError(
            f"{path}: cannot read backbone weights for {name!r} ({load_failure(exc)}); "
            "expected a safetensors file or a torch state dict of plain tensors"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DefectkitError(f"{path}: not a state dict of tensors (backbone {name!r})")
    return state


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of the model's weights written as canonical safetensors (the same bytes a bundle stores)."""
    return hashlib.sha256(weights_bytes(model)).hexdigest()


def weights_bytes(model: torch.nn.Module) -> bytes:
    return safetensors_bytes(cpu_state(model))
