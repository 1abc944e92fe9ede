"""Sets of proposal masks: tight Regions, overlap, de-duplication, tiles and merging across tiles.

Masks are handled as ``geometry.Region`` (a bounding-box-sized mask placed at x, y) so that many
masks on a large image cost memory in proportion to their size, not to the image's.
"""

from __future__ import annotations

import numpy as np

from defectkit.geometry import Region
from defectkit.matching import intersection, iou


def tight(mask: np.ndarray, x: int = 0, y: int = 0) -> Region | None:
    """The Region of a boolean mask, cropped to its set pixels and shifted by (x, y); None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return Region(x + int(cols[0]), y + int(rows[0]), mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy())


def union(a: Region, b: Region) -> Region:
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for r in (a, b):
        out[r.y - y0 : r.y - y0 + r.h, r.x - x0 : r.x - x0 + r.w] |= r.mask
    return Region(x0, y0, out)


def dedupe(regions: list[Region], scores: list[float], max_iou: float = 0.7) -> list[int]:
    """Indices of the regions kept by greedy non-maximum suppression on mask IoU, best score first."""
    kept: list[int] = []
    for index in sorted(range(len(regions)), key=lambda i: -scores[i]):
        if all(iou(regions[index], regions[k]) < max_iou for k in kept):
            kept.append(index)
    return kept


def tile_boxes(height: int, width: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of size x size tiles covering the image, neighbours sharing ``overlap`` of a tile."""
    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        step = max(1, int(size * (1 - overlap)))
        out = list(range(0, length - size, step))
        return out + [length - size]

    return [(x, y, min(width, x + size), min(height, y + size)) for y in starts(height) for x in starts(width)]


def _shared(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


def merge_tiles(
    regions: list[Region], tiles: list[int], boxes: list[tuple[int, int, int, int]], min_iou: float = 0.5
) -> tuple[list[Region], list[list[int]]]:
    """Join the pieces of one object cut by tile borders: regions from different tiles (``tiles[i]``
    indexes ``boxes``) whose masks agree (IoU >= ``min_iou``) inside the tiles' shared area are
    united. Returns the merged regions and, for each, the indices of its pieces."""
    parent = list(range(len(regions)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(regions)):
        for j in range(i + 1, len(regions)):
            if tiles[i] == tiles[j]:
                continue
            shared = _shared(boxes[tiles[i]], boxes[tiles[j]])
            if shared is None:
                continue
            inter = intersection(regions[i], regions[j], shared)
            if not inter:
                continue
            area_i = intersection(regions[i], regions[i], shared)
            area_j = intersection(regions[j], regions[j], shared)
            if inter / max(area_i + area_j - inter, 1) >= min_iou:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(regions)):
        groups.setdefault(root(i), []).append(i)
    merged = []
    for members in groups.values():
        region = regions[members[0]]
        for other in members[1:]:
            region = union(region, regions[other])
        merged.append(region)
    return merged, list(groups.values())
