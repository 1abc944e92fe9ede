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


def make_defect_crops(root: Path, per_subtype: int = 12, size: int = 48, seed: int = 0) -> Path:
    """A small crop data set in the magnetic-tile taxonomy whose subtypes differ in shape, texture and
    position: blowholes are dark discs, uneven patches mottled blobs (surface); cracks thin dark lines,
    frays jagged dark bands along the border (structural); background faint ellipses. Two crops per
    source image, so grouped cross-validation has something to group."""
    from defectkit.data.manifest import write_manifest
    from defectkit.geometry import Region, describe

    rng = np.random.default_rng(seed)
    records = []
    kinds = (("blowhole", "surface"), ("uneven", "surface"), ("crack", "structural"), ("fray", "structural"), ("background", "background"))
    for subtype, category in kinds:
        for i in range(per_subtype):
            crop = textured(size, size, seed=int(rng.integers(1 << 30)))
            mask = np.zeros((size, size), np.uint8)
            c = size // 2 + int(rng.integers(-3, 4))
            if subtype == "blowhole":
                cv2.circle(mask, (c, c), int(rng.integers(size // 10, size // 6)), 1, -1)
            elif subtype == "uneven":
                cv2.ellipse(mask, (c, c), (size // 3, size // 4), float(rng.uniform(0, 180)), 0, 360, 1, -1)
            elif subtype == "crack":
                angle = rng.uniform(0, np.pi)
                dx, dy = int(size * 0.4 * np.cos(angle)), int(size * 0.4 * np.sin(angle))
                cv2.line(mask, (c - dx, c - dy), (c + dx, c + dy), 1, 1)
            elif subtype == "fray":
                depth = rng.integers(3, 9, size=9)
                points = [(int(x), int(d)) for x, d in zip(np.linspace(0, size - 1, 9), depth)]
                cv2.fillPoly(mask, [np.array([(0, 0), *points, (size - 1, 0)], np.int32)], 1)
            else:
                cv2.ellipse(mask, (c, c), (size // 5, size // 8), float(rng.uniform(0, 180)), 0, 360, 1, -1)
            inside = mask > 0
            if subtype == "uneven":
                crop[inside] = np.clip(rng.normal(150, 45, (int(inside.sum()), 1)), 0, 255).astype(np.uint8)
            else:
                crop[inside] = {"background": 138, "blowhole": 50, "crack": 60, "fray": 40}[subtype]
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


def inspection_image(kind: str, seed: int):
    """A textured surface with one dark pore (blowhole) or one thin dark line (crack), and its mask."""
    rng = np.random.default_rng(seed)
    image = textured(120, 160, seed=seed)
    mask = np.zeros((120, 160), np.uint8)
    cx, cy = int(rng.integers(50, 110)), int(rng.integers(40, 80))
    if kind == "blowhole":
        cv2.circle(mask, (cx, cy), int(rng.integers(6, 11)), 255, -1)
    else:
        angle = rng.uniform(0, np.pi)
        dx, dy = int(35 * np.cos(angle)), int(35 * np.sin(angle))
        cv2.line(mask, (cx - dx, cy - dy), (cx + dx, cy + dy), 255, 2)
    image[mask > 0] = 60
    return image, mask


def image_set(root, count, seed):
    for i in range(count):
        for kind, label in (("blowhole", "MT_Blowhole"), ("crack", "MT_Crack")):
            image, mask = inspection_image(kind, seed + 2 * i + (kind == "crack"))
            write(root / label / f"{kind}{seed}_{i}.jpg", image)
            write(root / label / f"{kind}{seed}_{i}.png", mask)
    for i in range(count):
        write(root / "MT_Free" / f"free{seed}_{i}.jpg", textured(120, 160, seed=1000 + seed + i))
    return root
