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

import shutil
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from defectkit.bundle_files import check_local_model_name, library_versions, read_json_manifest, sha256_file, staged_folder, verify_files, write_manifest
from defectkit.errors import DefectkitError
from defectkit.features import FeatureSpec, build_features
from defectkit.state_dicts import save_weights
from defectkit.taxonomy import Taxonomy

FORMAT = "defectkit-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.skops"
BACKBONE_FILE = "backbone.safetensors"
PROPOSER_FOLDER = "proposer"  # a learned proposer the bundle carries (a proposer bundle of its own)

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


@dataclass
class Bundle:
    """A loaded bundle: the fitted model, its taxonomy and feature spec, and (lazily) its embedder."""

    path: Path
    manifest: dict
    model: Any
    taxonomy: Taxonomy
    spec: FeatureSpec
    _embedder: Any = field(default=None, repr=False)

    def embedder(self, device: str | None = None):
        """The backbone exactly as trained (weights from the bundle), built once (on ``device``, by
        default CUDA when present)."""
        if self._embedder is None and self.spec.embedding:
            from defectkit.embed import Embedder

            backbone = self.manifest["backbone"]
            embedder = Embedder(
                backbone["name"],
                weights=self.path / backbone["file"],
                image_size=backbone["image_size"],
                mask_mode=backbone["mask_mode"],
                device=device,
            )
            if embedder.weights_sha256 != backbone["weights_sha256"]:
                raise DefectkitError(
                    f"{self.path / backbone['file']}: backbone weights hash {embedder.weights_sha256[:12]}... "
                    f"differs from the manifest's {backbone['weights_sha256'][:12]}..."
                )
            self._embedder = embedder
        return self._embedder

    @property
    def proposer_path(self) -> Path | None:
        """The learned proposer this bundle carries (``<bundle>/proposer``), or None."""
        entry = self.manifest.get("proposer")
        return self.path / entry["folder"] if entry else None

    def trained_with(self) -> str | None:
        """The name of the proposer the training crops were extracted with (for auto, what it
        chose), or None where they had no proposer's crops or the bundle does not say."""
        from defectkit.propose.base import effective_name

        described = (self.manifest.get("training") or {}).get("negatives_from")
        return effective_name(described) if isinstance(described, dict) else None

    def features(self, records, cache=None, progress: bool = False, embed_on=None) -> np.ndarray:
        return build_features(records, self.spec, self.embedder(), cache, progress, embed_on)


def save_bundle(
    path: str | Path,
    model,
    taxonomy: Taxonomy,
    spec: FeatureSpec,
    embedder=None,
    training: dict | None = None,
    metrics: dict | None = None,
    proposer: str | Path | None = None,
    thresholds: dict | None = None,
) -> Path:
    """Write a bundle to ``path`` (a new or existing bundle folder), whole or not at all; with
    ``proposer`` (a proposer bundle folder), a copy of it travels inside, checked on every load.
    ``thresholds``: ``per_class``, the per-subtype confidences below which classify says
    ``uncertain``; ``defect``, the P(not background) below which it drops a region."""
    import skops.io as sio

    data = sio.dumps(model)
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise DefectkitError(
            f"cannot save a model containing types a bundle will not load: {', '.join(untrusted)} "
            "(see defectkit.bundle.TRUSTED_TYPES)"
        )
    path = Path(path)
    with staged_folder(path, MANIFEST, FORMAT, "defectkit model bundle") as staging:
        (staging / MODEL_FILE).write_bytes(data)
        backbone = None
        if spec.embedding:
            if embedder is None:
                raise DefectkitError("the feature spec uses embeddings: save_bundle needs the embedder")
            save_weights(embedder.model, staging / BACKBONE_FILE)
            backbone = {
                "name": embedder.backbone,
                "weights_sha256": embedder.weights_sha256,
                "weights_source": embedder.source.describe(),
                "image_size": embedder.image_size,
                "mask_mode": embedder.mask_mode,
                "dim": embedder.dim,
                "file": BACKBONE_FILE,
            }
        carried = _carry_proposer(Path(proposer), staging) if proposer else None
        write_manifest(staging, MANIFEST, {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "taxonomy": taxonomy.to_dict(),
            "backbone": backbone,
            "features": {**spec.to_dict(), "names": spec.names(backbone["dim"] if backbone else 0)},
            "model": {"file": MODEL_FILE, "type": f"{type(model).__module__}.{type(model).__qualname__}"},
            "proposer": carried,
            "thresholds": thresholds,
            "versions": library_versions(),
            "training": training or {},
            "metrics": metrics or {},
        })
    return path


def _carry_proposer(source: Path, staging: Path) -> dict:
    from defectkit.segmenter.bundle import MANIFEST as PROPOSER_MANIFEST, WEIGHTS, read_proposer_manifest

    verify_files(source, read_proposer_manifest(source), PROPOSER_MANIFEST, WEIGHTS)
    shutil.copytree(source, staging / PROPOSER_FOLDER)
    return {"folder": PROPOSER_FOLDER, "manifest_sha256": sha256_file(staging / PROPOSER_FOLDER / PROPOSER_MANIFEST)}


def _check_proposer(path: Path, manifest: dict) -> None:
    """The carried proposer's manifest is the one this bundle was saved with (its own files are
    checked against that manifest when it is loaded)."""
    from defectkit.segmenter.bundle import MANIFEST as PROPOSER_MANIFEST

    entry = manifest.get("proposer")
    if not entry:
        return
    file = path / str(entry.get("folder")) / PROPOSER_MANIFEST
    if entry.get("folder") != PROPOSER_FOLDER or not file.is_file():
        raise DefectkitError(f"{path}: the manifest names a proposer at {entry.get('folder')!r} but {file} is missing; the bundle is incomplete")
    if sha256_file(file) != entry.get("manifest_sha256"):
        raise DefectkitError(f"{file}: sha256 does not match the bundle's manifest: the proposer was modified. Restore the bundle or retrain it.")


def read_manifest(path: str | Path) -> dict:
    """The bundle's manifest, checked for format and version (nothing else is read)."""
    return read_json_manifest(Path(path), MANIFEST, FORMAT, FORMAT_VERSION, "model bundle", "defectkit train")


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle; raises DefectkitError saying what is wrong with it."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest, MANIFEST, MODEL_FILE, folders=(PROPOSER_FOLDER,) if manifest.get("proposer") else ())
    taxonomy, spec = _check_fields(path, manifest)
    _check_proposer(path, manifest)
    _warn_versions(path, manifest.get("versions", {}))
    model_file = path / MODEL_FILE
    try:
        model = sio.load(model_file, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as exc:
        raise DefectkitError(f"{model_file}: refused, it contains types a bundle may not load ({exc})") from exc
    except Exception as exc:  # a zip or schema error: the file is not a model we wrote
        raise DefectkitError(f"{model_file}: not a readable skops model ({type(exc).__name__}: {exc})") from exc
    classes = [str(c) for c in getattr(model, "classes_", [])]
    unknown = sorted(set(classes) - set(taxonomy.subtypes))
    if unknown:
        raise DefectkitError(f"{model_file}: predicts {', '.join(unknown)}, which the bundle's taxonomy does not list; "
                             "the bundle is inconsistent (retrain it)")
    return Bundle(path, manifest, model, taxonomy, spec)


def _check_fields(path: Path, manifest: dict) -> tuple[Taxonomy, FeatureSpec]:
    """The manifest's fields that decide what is loaded: only the bundle's own files, only a
    backbone timm builds without the network, a taxonomy and feature spec that parse."""
    file = path / MANIFEST
    try:
        if manifest["model"]["file"] != MODEL_FILE:
            raise DefectkitError(f"{file}: model.file is {manifest['model']['file']!r}; a bundle loads only its own {MODEL_FILE}")
        backbone = manifest["backbone"]
        if backbone is not None:
            if backbone["file"] != BACKBONE_FILE:
                raise DefectkitError(f"{file}: backbone.file is {backbone['file']!r}; a bundle loads only its own {BACKBONE_FILE}")
            check_local_model_name(backbone["name"], file)
        taxonomy = Taxonomy(
            name=manifest["taxonomy"]["name"],
            categories=manifest["taxonomy"]["categories"],
            aliases=manifest["taxonomy"].get("aliases") or {},
            source=str(file),
        )
        spec = FeatureSpec.from_dict(manifest["features"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise DefectkitError(f"{file}: incomplete or malformed manifest ({type(exc).__name__}: {exc}); restore the bundle or retrain it") from exc
    return taxonomy, spec


def _warn_versions(path: Path, saved: dict) -> None:
    current = library_versions()
    for name in ("scikit-learn", "xgboost"):
        if name in saved and saved[name].split(".")[:2] != current[name].split(".")[:2]:
            warnings.warn(
                f"{path}: trained with {name} {saved[name]}, running {current[name]}; predictions may differ slightly",
                stacklevel=3,
            )
