"""A trained classifier on disk: ``models/<name>/`` with a JSON manifest and files that cannot run code.

::

    manifest.json          format and version, taxonomy, backbone (name, weights sha256, input size,
                           mask mode), feature spec, library versions, training data summary, metrics,
                           and the sha256 of every other file
    model.skops            the fitted scikit-learn model (feature reduction + hierarchy of stacks),
                           read by skops with a fixed list of trusted types: never pickle
    backbone.safetensors   the backbone's weights (plain tensors), so the bundle is self-contained

Loading checks every file against its sha256 and refuses files the manifest does not list, so a
tampered, truncated or padded bundle is refused with a message saying which file and why.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.errors import DefectkitError
from defectkit.features import FeatureSpec, build_features
from defectkit.taxonomy import Taxonomy

FORMAT = "defectkit-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.skops"
BACKBONE_FILE = "backbone.safetensors"
ALLOWED_EXTRA = {"README.md"}  # a human note may sit beside the files; it is never read

# Types beyond skops' own defaults (NumPy, builtins, scikit-learn) that a bundle's model may contain.
# Each rebuilds from plain data: our estimators from their parameters and fitted arrays, XGBoost's
# Booster from its own serialised model bytes, KD-trees from arrays.
TRUSTED_TYPES = [
    "defectkit.ensemble.hierarchy.Hierarchy",
    "defectkit.ensemble.stack.StackedEnsemble",
    "defectkit.ensemble.learners.BalancedXGBClassifier",
    "defectkit.ensemble.learners.CappedKNeighborsClassifier",
    "defectkit.features.EmbeddingPCA",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import sklearn
    import skops
    import timm
    import torch
    import xgboost

    import defectkit

    return {
        "defectkit": defectkit.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "xgboost": xgboost.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "skops": skops.__version__,
    }


@dataclass
class Bundle:
    """A loaded bundle: the fitted model, its taxonomy and feature spec, and (lazily) its embedder."""

    path: Path
    manifest: dict
    model: Any
    taxonomy: Taxonomy
    spec: FeatureSpec
    _embedder: Any = field(default=None, repr=False)

    def embedder(self):
        """The backbone exactly as trained (weights from the bundle), built once."""
        if self._embedder is None and self.spec.embedding:
            from defectkit.embed import Embedder

            backbone = self.manifest["backbone"]
            embedder = Embedder(
                backbone["name"],
                weights=self.path / backbone["file"],
                image_size=backbone["image_size"],
                mask_mode=backbone["mask_mode"],
            )
            if embedder.weights_sha256 != backbone["weights_sha256"]:
                raise DefectkitError(
                    f"{self.path / backbone['file']}: backbone weights hash {embedder.weights_sha256[:12]}... "
                    f"differs from the manifest's {backbone['weights_sha256'][:12]}..."
                )
            self._embedder = embedder
        return self._embedder

    def features(self, records, cache=None, progress: bool = False) -> np.ndarray:
        return build_features(records, self.spec, self.embedder(), cache, progress)


def save_bundle(
    path: str | Path,
    model,
    taxonomy: Taxonomy,
    spec: FeatureSpec,
    embedder=None,
    training: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write a bundle to ``path`` (a new or existing bundle folder), whole or not at all."""
    import skops.io as sio
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MANIFEST).is_file())):
        raise DefectkitError(f"{path} exists and is not a defectkit bundle; choose another --out")
    data = sio.dumps(model)
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise DefectkitError(
            f"cannot save a model containing types a bundle will not load: {', '.join(untrusted)} "
            "(see defectkit.bundle.TRUSTED_TYPES)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        (staging / MODEL_FILE).write_bytes(data)
        backbone = None
        if spec.embedding:
            if embedder is None:
                raise DefectkitError("the feature spec uses embeddings: save_bundle needs the embedder")
            state = {k: v.detach().cpu().clone().contiguous() for k, v in embedder.model.state_dict().items()}
            save_file(state, str(staging / BACKBONE_FILE))
            backbone = {
                "name": embedder.backbone,
                "weights_sha256": embedder.weights_sha256,
                "weights_source": embedder.source.describe(),
                "image_size": embedder.image_size,
                "mask_mode": embedder.mask_mode,
                "dim": embedder.dim,
                "file": BACKBONE_FILE,
            }
        files = sorted(p.name for p in staging.iterdir())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "taxonomy": taxonomy.to_dict(),
            "backbone": backbone,
            "features": {**spec.to_dict(), "names": spec.names(backbone["dim"] if backbone else 0)},
            "model": {"file": MODEL_FILE, "type": f"{type(model).__module__}.{type(model).__qualname__}"},
            "versions": library_versions(),
            "training": training or {},
            "metrics": metrics or {},
            "files": {name: sha256_file(staging / name) for name in files},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_manifest(path: str | Path) -> dict:
    """The bundle's manifest, checked for format and version (nothing else is read)."""
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        raise DefectkitError(f"no model bundle at {path} (expected {MANIFEST}, as written by `defectkit train`)")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DefectkitError(f"{file}: not valid JSON ({exc}); the bundle is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DefectkitError(f"{file}: not a defectkit bundle manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise DefectkitError(f"{file}: no format_version")
    if version > FORMAT_VERSION:
        raise DefectkitError(
            f"{path}: bundle format version {version} was written by a newer defectkit "
            f"(version {manifest.get('versions', {}).get('defectkit', '?')}); this defectkit reads up to "
            f"version {FORMAT_VERSION}. Upgrade defectkit to load it."
        )
    return manifest


def verify_files(path: Path, manifest: dict) -> None:
    """Every listed file present with its sha256; no unlisted files."""
    listed = manifest.get("files")
    if not isinstance(listed, dict) or MODEL_FILE not in listed:
        raise DefectkitError(f"{path / MANIFEST}: lists no files; the bundle is damaged")
    present = {p.name for p in path.iterdir() if p.is_file() or p.is_dir()}
    extra = sorted(present - set(listed) - {MANIFEST} - ALLOWED_EXTRA)
    if extra:
        raise DefectkitError(
            f"{path}: file(s) not in the bundle's manifest: {', '.join(extra)}. A bundle holds only what "
            "`defectkit train` wrote; remove them or retrain."
        )
    for name, expected in listed.items():
        file = path / name
        if Path(name).name != name or not file.is_file():
            raise DefectkitError(f"{path}: {name} is listed in the manifest but missing; the bundle is incomplete")
        actual = sha256_file(file)
        if actual != expected:
            raise DefectkitError(
                f"{file}: sha256 {actual[:16]}... does not match the manifest ({str(expected)[:16]}...): "
                "the file was modified or truncated. Restore the bundle or retrain it."
            )


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle; raises DefectkitError saying what is wrong with it."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    _warn_versions(path, manifest.get("versions", {}))
    model_file = path / manifest["model"]["file"]
    try:
        model = sio.load(model_file, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as exc:
        raise DefectkitError(f"{model_file}: refused, it contains types a bundle may not load ({exc})") from exc
    except Exception as exc:  # a zip or schema error: the file is not a model we wrote
        raise DefectkitError(f"{model_file}: not a readable skops model ({type(exc).__name__}: {exc})") from exc
    taxonomy = Taxonomy(
        name=manifest["taxonomy"]["name"],
        categories=manifest["taxonomy"]["categories"],
        aliases=manifest["taxonomy"].get("aliases", {}),
        source=str(path / MANIFEST),
    )
    return Bundle(path, manifest, model, taxonomy, FeatureSpec.from_dict(manifest["features"]))


def _warn_versions(path: Path, saved: dict) -> None:
    current = library_versions()
    for name in ("scikit-learn", "xgboost"):
        if name in saved and saved[name].split(".")[:2] != current[name].split(".")[:2]:
            warnings.warn(
                f"{path}: trained with {name} {saved[name]}, running {current[name]}; predictions may differ slightly",
                stacklevel=3,
            )
