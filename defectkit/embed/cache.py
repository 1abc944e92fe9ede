"""A content-addressed store of crop embeddings, so the same crop is embedded once per backbone.

A crop's key is the sha256 of its crop and mask file bytes; a backbone's identity is its name,
the sha256 of its weights, the input size and the mask mode. Vectors live in
``ROOT/embeddings/<identity hash>/shard-*.npz`` (plain arrays, read with ``allow_pickle=False``), one
shard per call that embedded something new, with ``identity.json`` beside them saying what they are.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from defectkit.images import atomic_write_bytes, atomic_write_text


def default_cache_dir() -> Path:
    """``$DEFECTKIT_CACHE`` if set, else ``$XDG_CACHE_HOME/defectkit`` or ``~/.cache/defectkit``."""
    if os.environ.get("DEFECTKIT_CACHE"):
        return Path(os.environ["DEFECTKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "defectkit"


def content_key(*paths: str | Path | None) -> str:
    """sha256 over the bytes of the given files (a missing path counts as empty)."""
    digest = hashlib.sha256()
    for path in paths:
        data = Path(path).read_bytes() if path else b""
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def identity_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


class EmbeddingCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def folder(self, identity: dict) -> Path:
        return self.root / "embeddings" / identity_hash(identity)

    def load(self, identity: dict) -> dict[str, np.ndarray]:
        """Every stored vector for this backbone identity, by crop key."""
        vectors: dict[str, np.ndarray] = {}
        for shard in sorted(self.folder(identity).glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    vectors.update(zip(data["keys"].tolist(), data["vectors"]))
            except (OSError, ValueError, KeyError) as exc:
                warnings.warn(f"embedding cache: ignoring unreadable {shard} ({exc})", stacklevel=2)
        return vectors

    def save(self, identity: dict, keys: list[str], vectors: np.ndarray) -> Path | None:
        if not keys:
            return None
        folder = self.folder(identity)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "identity.json").is_file():
            atomic_write_text(folder / "identity.json", json.dumps(identity, indent=2, sort_keys=True))
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.asarray(keys, dtype="U64"), vectors=np.asarray(vectors, dtype=np.float32))
        path = folder / f"shard-{name}-{len(keys)}.npz"
        atomic_write_bytes(path, buffer.getvalue())
        return path
