"""The one way defectkit builds a SAM2 model: a config and a checkpoint in, a ready model out, as
``sam2.build_sam.build_sam2`` does, with a loud error when the checkpoint's weights do not fit.

- ``config``: a config of the ``sam2`` package (``sam2.1_hiera_t``, ``sam2.1_hiera_t.yaml`` or
  ``configs/sam2.1/sam2.1_hiera_t.yaml``) or the path of a complete SAM2 model YAML;
- ``checkpoint``: Meta's layout, ``{"model": state_dict}``, read with ``weights_only=True``; None
  gives random weights (tests only);
- ``image_size`` overrides the model's input side (1024 for the published models).

Checkpoints written here keep the stock layout, so ``build_sam2`` loads them too; one more top-level
key, ``"defectkit"`` (plain strings and numbers: how the model was trained, on which images), is
ignored by ``build_sam2``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from defectkit.errors import DefectkitError
from defectkit.state_dicts import load_failure, mismatch, write_state

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
        raise DefectkitError(f"{path}: not a readable PyTorch checkpoint ({load_failure(exc)})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise DefectkitError(f"{path}: not a SAM2 checkpoint: expected a dict with a 'model' state dict, as Meta's files have")
    return data


def read_metadata(path: str | Path) -> dict:
    """What defectkit recorded when it saved this checkpoint (empty for Meta's own files)."""
    return dict(read_checkpoint(path, mmap=True).get(METADATA_KEY) or {})


# What build_sam2 sets on every model it builds; a model YAML outside the package gets the same.
BUILD_OVERRIDES = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)


def build(config: str, image_size: int | None = None):
    """The model of ``config`` (a package config or a model YAML's path) with random weights, on the
    CPU, in eval mode."""
    overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
    if Path(str(config)).suffix == ".yaml" and Path(str(config)).is_file():
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.merge(OmegaConf.load(config), OmegaConf.from_dotlist([o.lstrip("+") for o in (*BUILD_OVERRIDES, *overrides)]))
        OmegaConf.resolve(cfg)
        return instantiate(cfg.model, _recursive_=True).eval()
    from sam2.build_sam import build_sam2

    return build_sam2(resolve_config(config), ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)


def load_model(config: str, checkpoint: str | Path | None, device: str | torch.device = "cpu", image_size: int | None = None):
    """Build ``config`` and load ``checkpoint`` into it, strictly, with errors that say what is wrong
    (``checkpoint`` None: random weights). ``image_size``: smaller is much faster on a CPU, and a
    checkpoint trained so should be used at the same size."""
    if checkpoint is None:
        # seeded, so that a run (and a test) with random weights is the same every time
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build(config, image_size).to(device).eval()
    is_yaml = Path(str(config)).suffix == ".yaml" and Path(str(config)).is_file()
    config_name = str(config) if is_yaml else resolve_config(config)
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
    write_state(path, {"model": state, METADATA_KEY: dict(metadata or {})})
    return Path(path)
