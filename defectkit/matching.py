"""Overlap between regions: the one IoU, and matching found regions to true ones."""

from __future__ import annotations

import numpy as np

from defectkit.geometry import Region

MATCH_IOU = 0.3  # a found region is the true one from this IoU on (thin cracks are narrow: 0.5 is too strict)


def _window(a: Region, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return a.mask[y0 - a.y : y1 - a.y, x0 - a.x : x1 - a.x]


def intersection(a: Region, b: Region, box: tuple[int, int, int, int] | None = None) -> int:
    """Pixels set in both (within ``box`` = x0, y0, x1, y1 when given)."""
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    if box is not None:
        x0, y0, x1, y1 = max(x0, box[0]), max(y0, box[1]), min(x1, box[2]), min(y1, box[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    return int((_window(a, (x0, y0, x1, y1)) & _window(b, (x0, y0, x1, y1))).sum())


def iou(a: Region, b: Region) -> float:
    """IoU of two regions' pixels."""
    inter = intersection(a, b)
    return inter / max(a.area + b.area - inter, 1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two full-size boolean masks."""
    inter = np.count_nonzero(a & b)
    return inter / max(np.count_nonzero(a) + np.count_nonzero(b) - inter, 1)


def iou_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """IoU of every full-size boolean mask in ``a`` with every one in ``b`` (len(a) x len(b));
    lists of masks or (N, H, W) arrays."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    flat_a = np.stack([m.ravel() for m in a]).astype(np.float32)
    flat_b = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1)


def box_iou_matrix(a: list[Region], b: list[Region]) -> np.ndarray:
    """IoU of the bounding boxes of every region in ``a`` with every one in ``b``."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    box_a = np.array([[r.x, r.y, r.x + r.w, r.y + r.h] for r in a], dtype=np.float64)
    box_b = np.array([[r.x, r.y, r.x + r.w, r.y + r.h] for r in b], dtype=np.float64)
    x0 = np.maximum(box_a[:, None, 0], box_b[None, :, 0])
    y0 = np.maximum(box_a[:, None, 1], box_b[None, :, 1])
    x1 = np.minimum(box_a[:, None, 2], box_b[None, :, 2])
    y1 = np.minimum(box_a[:, None, 3], box_b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])
    area_b = (box_b[:, 2] - box_b[:, 0]) * (box_b[:, 3] - box_b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def region_iou(truth: list[Region], found: list[Region], boxes: bool = False) -> np.ndarray:
    """IoU of true regions (rows) with found ones (columns): of their boxes when the truth was
    labelled with boxes, else of their pixels."""
    out = box_iou_matrix(truth, found)
    if boxes:
        return out
    for i, j in zip(*np.nonzero(out)):  # only where the boxes overlap can the pixels
        out[i, j] = iou(truth[i], found[j])
    return out


def one_to_one(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, column) with IoU >= ``threshold``, best first, each row and column used once."""
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r, used_c, pairs = set(), set(), []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r), used_c.add(c), pairs.append((r, c))
    return pairs
