"""The one place that chooses where torch runs."""

from __future__ import annotations

import torch

from defectkit.errors import DefectkitError


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when present, else the CPU; a CUDA device asked for on a machine
    without one is an error that says so, not a silent fallback."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DefectkitError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return torch.device(device)
