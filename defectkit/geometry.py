"""Masks -> connected regions -> polygons and shape measurements (OpenCV)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from defectkit.defect import Defect
from defectkit.images import gray

# Names of the geometry features every Defect carries, in a fixed order (classifiers rely on it).
FEATURE_NAMES = (
    "perimeter",
    "circularity",
    "solidity",
    "extent",
    "aspect_ratio",
    "orientation",
    "mean_inside",
    "std_inside",
    "mean_around",
    "std_around",
    "contrast",
    "center_x",
    "center_y",
    "border_distance",
    "center_border_distance",
)


@dataclass
class Region:
    """A connected set of pixels: a boolean mask the size of its bounding box, placed at (x, y)."""

    x: int
    y: int
    mask: np.ndarray

    @property
    def w(self) -> int:
        return self.mask.shape[1]

    @property
    def h(self) -> int:
        return self.mask.shape[0]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape[:2], dtype=bool)
        out[self.y : self.y + self.h, self.x : self.x + self.w] = self.mask
        return out

    @classmethod
    def from_polygon(cls, polygon, image_shape) -> "Region":
        """Rasterise a polygon ``[[x, y], ...]`` (clipped to the image) into a Region."""
        points = np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32).reshape(-1, 2)
        height, width = image_shape[:2]
        points[:, 0] = np.clip(points[:, 0], 0, width - 1)
        points[:, 1] = np.clip(points[:, 1], 0, height - 1)
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        canvas = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
        cv2.fillPoly(canvas, [points - [x0, y0]], 1)
        return cls(int(x0), int(y0), canvas.astype(bool))


def connected_regions(mask: np.ndarray, min_area: int = 1) -> list[Region]:
    """Split a boolean mask into its 8-connected regions, dropping those below ``min_area`` pixels."""
    binary = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    # label only the box around the mask's pixels (from even coordinates, so that OpenCV's 2x2
    # block scan, and with it the order of the regions, is the same as on the whole mask)
    x0, y0, width, height = cv2.boundingRect(binary)
    x0, y0 = x0 - x0 % 2, y0 - y0 % 2
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary[y0 : y0 + height + 1, x0 : x0 + width + 1], connectivity=8)
    regions = []
    for index in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[index])
        if area < min_area:
            continue
        regions.append(Region(x0 + x, y0 + y, labels[y : y + h, x : x + w] == index))
    return regions


def _contours(region: Region) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outer contour and hole contours of a region, in image coordinates (unsimplified)."""
    padded = np.pad(region.mask, 1).astype(np.uint8)
    contours, hierarchy = cv2.findContours(padded, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    offset = np.array([region.x - 1, region.y - 1], dtype=np.int32)
    outer_index = max(
        (i for i in range(len(contours)) if hierarchy[0][i][3] == -1),
        key=lambda i: len(contours[i]),
    )
    holes = [contours[i] + offset for i in range(len(contours)) if hierarchy[0][i][3] == outer_index]
    return contours[outer_index] + offset, holes


def simplify(contour: np.ndarray, tolerance: float) -> np.ndarray:
    return cv2.approxPolyDP(contour, tolerance, closed=True).reshape(-1, 2)


def describe(
    region: Region,
    image: np.ndarray,
    image_path: str = "",
    polygon_tolerance: float = 1.0,
) -> Defect:
    """Polygonize and measure one region of ``image`` (RGB or gray, uint8)."""
    height, width = image.shape[:2]
    outer, hole_contours = _contours(region)
    polygon = simplify(outer, polygon_tolerance)
    holes = [h for h in (simplify(c, polygon_tolerance) for c in hole_contours) if len(h) >= 3]
    area = region.area
    features = _shape_features(region, outer, area)
    features.update(_intensity_features(region, gray(image)))
    features.update(_position_features(region, width, height))
    return Defect(
        image=str(image_path),
        image_size=(width, height),
        polygon=polygon.tolist(),
        holes=[h.tolist() for h in holes],
        bbox=[region.x, region.y, region.w, region.h],
        area=area,
        edges=len(polygon),
        features={name: float(features[name]) for name in FEATURE_NAMES},
        region=region,
    )


def defects_from_mask(
    image: np.ndarray,
    mask: np.ndarray,
    image_path: str = "",
    min_area: int = 1,
    polygon_tolerance: float = 1.0,
) -> list[Defect]:
    """One Defect per connected region of ``mask`` with at least ``min_area`` pixels (``image``
    RGB or gray: only its gray values are measured)."""
    if mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {image.shape[1]}x{image.shape[0]}")
    image = gray(image)  # once, not once per region
    return [
        describe(region, image, image_path, polygon_tolerance)
        for region in connected_regions(mask, min_area)
    ]


def polygonize(masks: list[np.ndarray], image: np.ndarray, image_path: str = "", min_area: int = 10,
               polygon_tolerance: float = 1.0) -> list[Defect]:
    """Every connected region of every proposed mask as a measured Defect, ids 1, 2, ... in
    proposal order."""
    image_gray = gray(image)  # what the measurements read, converted once per image
    defects = [d for mask in masks for d in defects_from_mask(image_gray, mask, str(image_path), min_area, polygon_tolerance)]
    for number, defect in enumerate(defects, start=1):
        defect.id = number
    return defects


def _shape_features(region: Region, outer: np.ndarray, area: int) -> dict[str, float]:
    perimeter = cv2.arcLength(outer, closed=True)
    circularity = min(1.0, 4 * math.pi * area / perimeter**2) if perimeter > 0 else 1.0
    hull = cv2.convexHull(outer) - [region.x, region.y]
    hull_canvas = np.zeros(region.mask.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull_canvas, hull.astype(np.int32), 1)
    hull_area = max(int(hull_canvas.sum()), area)
    (_, _), (side_a, side_b), _ = cv2.minAreaRect(outer)
    long_side, short_side = max(side_a, side_b) + 1.0, min(side_a, side_b) + 1.0
    moments = cv2.moments(region.mask.astype(np.uint8), binaryImage=True)
    orientation = 0.5 * math.degrees(math.atan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"]))
    return {
        "perimeter": perimeter,
        "circularity": circularity,
        "solidity": area / hull_area,
        "extent": area / (region.w * region.h),
        "aspect_ratio": long_side / short_side,
        "orientation": orientation % 180.0,
    }


def dilate_disc(mask: np.ndarray, radius: int) -> np.ndarray:
    """``cv2.dilate`` of a uint8 mask by OpenCV's elliptic kernel of ``2 * radius + 1`` px, pixel
    for pixel. OpenCV dilates by a non-rectangular kernel at the cost of its area per pixel; from
    ``radius`` 24 on (rings of regions over about 9,000 px) the kernel is taken as its rows instead:
    each row a centred run of ones, one line dilation per run length, shifted into place."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    if radius < 24:
        return cv2.dilate(mask, kernel)
    height = len(mask)
    out = np.zeros_like(mask)
    lines: dict[int, np.ndarray] = {}
    for dy, run in zip(range(-radius, radius + 1), kernel.sum(axis=1).tolist()):
        if abs(dy) >= height:
            continue
        if run not in lines:
            lines[run] = cv2.dilate(mask, np.ones((1, run), np.uint8))
        if dy >= 0:
            np.maximum(out[: height - dy], lines[run][dy:], out=out[: height - dy])
        else:
            np.maximum(out[-dy:], lines[run][: height + dy], out=out[-dy:])
    return out


def _intensity_features(region: Region, image_gray: np.ndarray) -> dict[str, float]:
    """Mean and spread of intensity inside the region and in a ring around it, on a 0-1 scale."""
    height, width = image_gray.shape
    ring = max(3, int(round(0.25 * math.sqrt(region.area))))
    x0, y0 = max(0, region.x - ring), max(0, region.y - ring)
    x1, y1 = min(width, region.x + region.w + ring), min(height, region.y + region.h + ring)
    window = image_gray[y0:y1, x0:x1].astype(np.float32) / 255.0
    inside = np.zeros(window.shape, dtype=np.uint8)
    inside[region.y - y0 : region.y - y0 + region.h, region.x - x0 : region.x - x0 + region.w] = region.mask
    around = dilate_disc(inside, ring).astype(bool) & ~inside.astype(bool)
    inner = window[inside.astype(bool)]
    outer = window[around] if around.any() else inner
    return {
        "mean_inside": float(inner.mean()),
        "std_inside": float(inner.std()),
        "mean_around": float(outer.mean()),
        "std_around": float(outer.std()),
        "contrast": float(inner.mean() - outer.mean()),
    }


def _position_features(region: Region, width: int, height: int) -> dict[str, float]:
    """Where the region sits: edge defects (breaks, frays) touch the part's border."""
    ys, xs = np.nonzero(region.mask)
    cx, cy = region.x + xs.mean() + 0.5, region.y + ys.mean() + 0.5
    scale = float(min(width, height))
    gap = min(region.x, region.y, width - region.x - region.w, height - region.y - region.h)
    return {
        "center_x": cx / width,
        "center_y": cy / height,
        "border_distance": gap / scale,
        "center_border_distance": min(cx, cy, width - cx, height - cy) / scale,
    }
