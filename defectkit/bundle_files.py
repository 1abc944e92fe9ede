"""Model folders on disk (classifier and proposer bundles): written whole or not at all, and checked
file by file against their manifest's sha256 when loaded."""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from defectkit.errors import DefectkitError
from defectkit.images import plain_mode
from defectkit.jsonable import to_jsonable

ALLOWED_EXTRA = {"README.md"}  # a human note may sit beside the files; it is never read


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


def _is_bundle(path: Path, manifest_file: str, format: str) -> bool:
    try:
        return json.loads((path / manifest_file).read_text()).get("format") == format
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def staged_folder(path: Path, manifest_file: str, format: str, what: str) -> Iterator[Path]:
    """A fresh folder beside ``path`` to write a bundle into; when the block ends without an error
    it takes ``path``'s place. Only an empty folder or a bundle of the same ``format`` is ever
    replaced, and only once the new one is whole."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not _is_bundle(path, manifest_file, format))):
        raise DefectkitError(f"{path} exists and is not a {what}; choose another --out (nothing was overwritten)")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    plain_mode(staging, folder=True)
    old = path.with_name(f".{path.name}.old")
    try:
        yield staging
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_local_model_name(name: object, source: Path) -> None:
    """A bundle may name only a model timm builds from its own registry: a hub name (``hf-hub:``)
    would reach the network on load, and the weights come from the bundle anyway."""
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        raise DefectkitError(f"{source}: {name!r} is not a model timm knows locally; a bundle loads only its own "
                             "weights into a registered architecture and never fetches anything")


def digest_file(manifest_file: str) -> str:
    """The file beside a manifest that holds the manifest's own sha256 (its settings decide the
    results, so a change to any of them must be refused like a change to a weight file)."""
    return f"{Path(manifest_file).stem}.sha256"


def write_manifest(folder: Path, manifest_file: str, manifest: dict) -> None:
    """``manifest`` with the sha256 of every file already in ``folder`` under ``files``, and its
    own sha256 beside it."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    manifest = {**manifest, "files": {name: sha256_file(folder / name) for name in files}}
    (folder / manifest_file).write_text(json.dumps(to_jsonable(manifest), indent=2) + "\n")
    (folder / digest_file(manifest_file)).write_text(sha256_file(folder / manifest_file) + "\n")


def verify_files(path: Path, manifest: dict, manifest_file: str, required: str, folders: tuple[str, ...] = ()) -> None:
    """Every listed file present with its sha256; nothing unlisted but ``folders`` (bundles of their
    own, checked by their own manifests)."""
    listed = manifest.get("files")
    if not isinstance(listed, dict) or required not in listed:
        raise DefectkitError(f"{path / manifest_file}: lists no files; the bundle is damaged")
    present = {p.name for p in path.iterdir() if p.is_file() or p.is_dir()}
    extra = sorted(present - set(listed) - {manifest_file, digest_file(manifest_file)} - ALLOWED_EXTRA - set(folders))
    if extra:
        raise DefectkitError(
            f"{path}: file(s) not in the bundle's manifest: {', '.join(extra)}. A bundle holds only what "
            "defectkit wrote; remove them or retrain."
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


def read_json_manifest(path: Path, manifest_file: str, format: str, version: int, what: str, writer: str) -> dict:
    """The manifest of a bundle at ``path``, checked for format and version."""
    file = path / manifest_file
    if not file.is_file():
        previous = path.with_name(f".{path.name}.old")
        if (previous / manifest_file).is_file():
            raise DefectkitError(f"no {what} at {path}: a save was interrupted between its two renames; the previous "
                                 f"{what} is whole at {previous}: rename it back to {path.name}")
        raise DefectkitError(f"no {what} at {path} (expected {manifest_file}, as written by `{writer}`)")
    digest = path / digest_file(manifest_file)
    try:
        expected = digest.read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise DefectkitError(f"{path}: {digest.name} is missing or unreadable, so {manifest_file} cannot be checked; "
                             f"the {what} is incomplete (re-save it with `{writer}`)") from None
    if sha256_file(file) != expected:
        raise DefectkitError(f"{file}: sha256 does not match {digest.name}: the manifest was modified. "
                             f"Restore the {what} or retrain it.")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DefectkitError(f"{file}: not valid JSON ({exc}); the {what} is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != format:
        raise DefectkitError(f"{file}: not a defectkit {what} manifest")
    found = manifest.get("format_version")
    if not isinstance(found, int):
        raise DefectkitError(f"{file}: no format_version")
    if found > version:
        raise DefectkitError(
            f"{path}: {what} format version {found} was written by a newer defectkit "
            f"(version {manifest.get('versions', {}).get('defectkit', '?')}); this defectkit reads up to "
            f"version {version}. Upgrade defectkit to load it."
        )
    return manifest
