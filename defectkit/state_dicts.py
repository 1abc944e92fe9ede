"""Checking that a weights file fits a model, with a message that says how it does not."""

from __future__ import annotations


def mismatch(state: dict, expected: dict) -> str:
    """'' when ``state`` has exactly the keys and shapes of ``expected``, else what differs."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                     f"{tuple(expected[k].shape)} in the model)")
    return "; ".join(parts)


def load_failure(exc: Exception) -> str:
    """One line on why ``torch.load(..., weights_only=True)`` refused a file. torch's own message
    for a pickle holding objects runs to dozens of lines and ends in advice to retry with
    ``weights_only=False``, which must never be followed for a file of unknown origin."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return "it holds Python objects beyond tensors and plain values, which are never loaded (not retried unsafely)"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def cpu_state(module) -> dict:
    """A module's weights as plain, contiguous CPU tensors of their own (what safetensors writes)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def save_weights(module, path) -> None:
    """A module's weights as a safetensors file (plain tensors: loading it runs no code), written
    atomically and with the mode a plain ``open`` gives (safetensors' own writer leaves it 0600)."""
    from safetensors.torch import save

    from defectkit.images import atomic_write_bytes

    atomic_write_bytes(path, save(cpu_state(module)))


def write_state(path, state: dict) -> None:
    """Save a training state (tensors and plain values) so that a kill leaves the old file or the
    new one, never half of one; read it back with ``torch.load(path, weights_only=True)``."""
    import io

    import torch

    from defectkit.images import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
