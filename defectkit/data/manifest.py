"""Crop data sets on disk: ``manifest.jsonl`` (one JSON object per crop) beside the crop images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from defectkit.errors import DefectkitError
from defectkit.images import atomic_write_text

MANIFEST = "manifest.jsonl"
SETTINGS = "extract.json"  # how the crops were made, beside the manifest
REQUIRED = ("crop_path", "image", "subtype")  # the crop, its source image (splits group by it), its label


def write_manifest(path: str | Path, records: Iterable[dict]) -> Path:
    """Write all records at once (temporary file, then rename): never half a manifest."""
    path = Path(path)
    text = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)
    atomic_write_text(path, text)
    return path


def read_manifest(path: str | Path, check_files: bool = True) -> list[dict]:
    """Read a crop data set (its folder or its manifest), with crop paths made absolute.

    Raises DefectkitError naming the line for malformed JSON, and listing crops that are missing.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise DefectkitError(f"no crop data set at {path} (expected a folder with {MANIFEST}, as written by `defectkit extract`)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DefectkitError(f"{path}, line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DefectkitError(f"{path}, line {number}: a crop must be a JSON object, not {type(record).__name__}")
        absent = [key for key in REQUIRED if not isinstance(record.get(key), str) or not record[key]]
        if absent:
            raise DefectkitError(f"{path}, line {number}: no {', '.join(absent)} (every crop names its {', '.join(REQUIRED)})")
        for key in ("crop_path", "mask_path"):
            if record.get(key) and not Path(record[key]).is_absolute():
                record[key] = str(path.parent / record[key])
        records.append(record)
    if check_files:
        missing = [r.get("crop_path") for r in records if not r.get("crop_path") or not Path(r["crop_path"]).is_file()]
        if missing:
            shown = ", ".join(str(m) for m in missing[:5])
            raise DefectkitError(f"{path}: {len(missing)} crop(s) listed but missing on disk, e.g. {shown}")
    return records


def settings_path(dataset: str | Path) -> Path:
    """Where ``extract.json`` lies for a crop data set given as its folder or its manifest."""
    path = Path(dataset)
    return (path if path.is_dir() else path.parent) / SETTINGS


def negatives_settings(dataset: str | Path) -> dict | None:
    """The proposer whose proposals off the defects became background crops (as it described
    itself, auto with its choice), from ``extract.json``; None when there were none or it is unknown."""
    settings = settings_path(dataset)
    if not settings.is_file():
        return None
    try:
        return json.loads(settings.read_text()).get("negatives_proposer")
    except (ValueError, AttributeError) as exc:
        raise DefectkitError(f"{settings}: not valid JSON ({exc})") from exc


def crop_settings(dataset: str | Path) -> dict:
    """How a crop data set's crops were cut (``CropSpec`` fields), from ``extract.json`` beside its
    manifest; {} when unknown (crops made elsewhere), meaning the defaults."""
    settings = settings_path(dataset)
    if not settings.is_file():
        return {}
    try:
        return dict(json.loads(settings.read_text()).get("crop", {}))
    except (ValueError, AttributeError) as exc:
        raise DefectkitError(f"{settings}: not valid JSON ({exc})") from exc
