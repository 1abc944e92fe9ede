"""A trained proposer on disk: plain tensors and JSON, nothing that can run code.

::

    proposer.json          format and version, the network (architecture, timm encoder, decoder),
                           input (scale, tile size, overlap; the network's mean and std), the post-processing chosen on the
                           validation part, training summary and metrics, and the sha256 of every file
    network.safetensors    the network's weights

Loading checks every file against its sha256 and refuses unlisted files, as classifier bundles do;
weights that do not fit the network the manifest describes are refused with both names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from defectkit.bundle_files import check_local_model_name, library_versions, read_json_manifest, staged_folder, verify_files, write_manifest
from defectkit.errors import DefectkitError
from defectkit.segmenter.inference import Postprocess
from defectkit.segmenter.network import NetworkSpec, build_network
from defectkit.state_dicts import mismatch, save_weights

FORMAT = "defectkit-proposer"
FORMAT_VERSION = 1
MANIFEST = "proposer.json"
WEIGHTS = "network.safetensors"


@dataclass
class ProposerBundle:
    path: Path
    manifest: dict
    network: torch.nn.Module
    spec: NetworkSpec
    post: Postprocess
    tile: int
    overlap: int
    scale: float = 1.0


def save_proposer(path: str | Path, network: torch.nn.Module, spec: NetworkSpec, post: Postprocess, tile: int,
                  overlap: int, training: dict | None = None, metrics: dict | None = None, scale: float = 1.0) -> Path:
    """Write a proposer bundle to ``path``, whole or not at all."""
    path = Path(path)
    with staged_folder(path, MANIFEST, FORMAT, "proposer bundle") as staging:
        save_weights(network, staging / WEIGHTS)
        write_manifest(staging, MANIFEST, {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "network": spec.to_dict(),
            "input": {"tile": tile, "overlap": overlap, "scale": scale},  # normalisation: the network's mean and std
            "postprocess": post.to_dict(),
            "versions": library_versions(),
            "training": training or {},
            "metrics": metrics or {},
        })
    return path


def read_proposer_manifest(path: str | Path) -> dict:
    return read_json_manifest(Path(path), MANIFEST, FORMAT, FORMAT_VERSION, "proposer bundle", "defectkit train-proposer")


def load_proposer(path: str | Path, device: torch.device | str = "cpu") -> ProposerBundle:
    """Load and verify a proposer bundle; raises DefectkitError saying what is wrong with it."""
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_proposer_manifest(path)
    verify_files(path, manifest, MANIFEST, WEIGHTS)
    try:
        spec = NetworkSpec.from_dict(manifest["network"])
        check_local_model_name(spec.encoder, path / MANIFEST)
        post = Postprocess(**manifest["postprocess"])
        tile, overlap = int(manifest["input"]["tile"]), int(manifest["input"]["overlap"])
        scale = float(manifest["input"].get("scale", 1.0))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DefectkitError(f"{path / MANIFEST}: incomplete proposer manifest ({type(exc).__name__}: {exc})") from exc
    network = build_network(spec)
    state = load_file(str(path / WEIGHTS))
    problems = mismatch(state, network.state_dict())
    if problems:
        raise DefectkitError(f"{path / WEIGHTS}: weights do not fit the {spec.architecture} over {spec.encoder!r} "
                             f"that {MANIFEST} describes: {problems}")
    network.load_state_dict(state, strict=True)
    return ProposerBundle(path, manifest, network.to(device).eval(), spec, post, tile, overlap, scale)
