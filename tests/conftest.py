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
