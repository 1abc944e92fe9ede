from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "magnetic-tile"
TAXONOMY = ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml"


@pytest.fixture
def taxonomy():
    from defectkit.taxonomy import Taxonomy

    return Taxonomy.load(TAXONOMY)


def textured(height=120, width=160, seed=0) -> np.ndarray:
    """A gray surface with mild noise, as uint8 RGB."""
    rng = np.random.default_rng(seed)
    gray = np.clip(rng.normal(150, 8, (height, width)), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), array), path
    return path


def make_crop_dataset(root: Path, per_class: int = 12, size: int = 48, seed: int = 0) -> Path:
    """A tiny crop data set (manifest.jsonl + crops + masks) of three subtypes that differ in shape:
    dark discs (blowhole), dark lines (crack) and faint irregular patches (background)."""
    from defectkit.data.manifest import write_manifest
    from defectkit.geometry import Region, describe

    rng = np.random.default_rng(seed)
    records = []
    for subtype, category in (("blowhole", "surface"), ("crack", "structural"), ("background", "background")):
        for i in range(per_class):
            crop = textured(size, size, seed=int(rng.integers(1 << 30)))
            mask = np.zeros((size, size), np.uint8)
            c = size // 2 + int(rng.integers(-3, 4))
            if subtype == "blowhole":
                cv2.circle(mask, (c, c), int(rng.integers(size // 8, size // 4)), 1, -1)
            elif subtype == "crack":
                angle = rng.uniform(0, np.pi)
                dx, dy = int(size * 0.4 * np.cos(angle)), int(size * 0.4 * np.sin(angle))
                cv2.line(mask, (c - dx, c - dy), (c + dx, c + dy), 1, 2)
            else:
                cv2.ellipse(mask, (c, c), (size // 5, size // 8), float(rng.uniform(0, 180)), 0, 360, 1, -1)
            shade = 135 if subtype == "background" else 60
            crop[mask > 0] = shade
            name = f"{subtype}_{i}"
            write(root / "crops" / f"{name}.png", crop)
            write(root / "crops" / f"{name}_mask.png", mask * 255)
            ys, xs = np.nonzero(mask)
            region = Region(int(xs.min()), int(ys.min()), mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(bool))
            defect = describe(region, crop, image_path=f"img_{subtype}_{i // 2}.png")
            defect.category, defect.subtype, defect.label = category, subtype, subtype
            defect.crop_path, defect.mask_path = f"crops/{name}.png", f"crops/{name}_mask.png"
            records.append({**defect.to_dict(), "origin": "annotation"})
    write_manifest(root / "manifest.jsonl", records)
    return root
