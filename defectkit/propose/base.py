"""What every proposer is: an image in, boolean masks out, with the expensive per-image work
(``set_image``) kept apart from the cheap per-prompt work (``predict``), as in SAM2's predictor."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from defectkit.errors import DefectkitError


@dataclass
class Prompts:
    """N prompts for one image, in image pixels: ``boxes`` (N, 4) as x0, y0, x1, y1, and/or
    ``points`` (N, K, 2) as x, y with ``labels`` (N, K), 1 = on the object, 0 = off it. Prompt i
    is box i together with points i; each prompt asks for one mask."""

    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self):
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float32)
            if self.points.ndim == 2:  # one point per prompt
                self.points = self.points[:, None, :]
            if self.points.ndim != 3 or self.points.shape[2] != 2:
                raise ValueError(f"points must have shape (N, K, 2), got {self.points.shape}")
            if self.labels is None:
                self.labels = np.ones(self.points.shape[:2], dtype=np.int32)
            self.labels = np.asarray(self.labels, dtype=np.int32).reshape(self.points.shape[:2])
        if self.boxes is None and self.points is None:
            raise ValueError("Prompts need boxes, points or both")
        if self.boxes is not None and self.points is not None and len(self.boxes) != len(self.points):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.points)} point sets: pair them one to one")

    def __len__(self) -> int:
        return len(self.boxes) if self.boxes is not None else len(self.points)

    def subset(self, index) -> "Prompts":
        return Prompts(
            boxes=None if self.boxes is None else self.boxes[index],
            points=None if self.points is None else self.points[index],
            labels=None if self.labels is None else self.labels[index],
        )

    def shifted(self, dx: float, dy: float) -> "Prompts":
        """The same prompts in the frame of a tile whose top-left corner is (dx, dy)."""
        return Prompts(
            boxes=None if self.boxes is None else self.boxes - [dx, dy, dx, dy],
            points=None if self.points is None else self.points - [dx, dy],
            labels=self.labels,
        )

    @classmethod
    def from_masks(cls, masks: list[np.ndarray], margin: int = 2, points: bool = True) -> "Prompts":
        """One prompt per mask: its bounding box grown by ``margin`` px and, with ``points``, the
        mask pixel farthest from its edge (inside even a thin or curved region)."""
        boxes, centres = [], []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            height, width = mask.shape
            boxes.append([max(0, xs.min() - margin), max(0, ys.min() - margin),
                          min(width - 1, xs.max() + margin), min(height - 1, ys.max() + margin)])
            centres.append(interior_point(mask))
        return cls(boxes=np.array(boxes), points=np.array(centres)[:, None, :] if points else None)


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the mask pixel farthest from the mask's edge."""
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    window = np.pad(mask[y0 : ys.max() + 1, x0 : xs.max() + 1], 1).astype(np.uint8)
    distance = cv2.distanceTransform(window, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return float(x0 + x - 1), float(y0 + y - 1)


class Proposer:
    """Base class. Subclasses set ``name``, implement ``predict`` and ``config``, and do their
    expensive per-image work in ``set_image`` (calling ``super().set_image`` first)."""

    name = "proposer"
    accepts_prompts = False

    def __init__(self):
        self.image: np.ndarray | None = None
        self.image_path: str | None = None

    def set_image(self, image: np.ndarray, image_path: str | None = None) -> None:
        """Take a new uint8 RGB (H, W, 3) image; ``image_path`` lets annotation-based proposers
        find the annotation of this image."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        self.image, self.image_path = image, None if image_path is None else str(image_path)

    def predict(self, prompts: Prompts | None = None) -> list[np.ndarray]:
        """Boolean (H, W) masks for the current image: one per prompt, or, without prompts, the
        proposer's own proposals."""
        raise NotImplementedError

    def propose(self, image: np.ndarray, prompts: Prompts | None = None, image_path: str | None = None) -> list[np.ndarray]:
        self.set_image(image, image_path)
        return self.predict(prompts)

    def config(self) -> dict:
        """The settings that decide this proposer's output (recorded in every result file)."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name, **self.config()}

    def _check(self, prompts: Prompts | None) -> None:
        if self.image is None:
            raise RuntimeError(f"{self.name}: call set_image(image) before predict()")
        if prompts is not None and not self.accepts_prompts:
            raise DefectkitError(f"the {self.name} proposer takes no prompts; use sam2 or hybrid to answer boxes and points")


def effective_name(described: dict) -> str:
    """A proposer's name (from its ``describe()``), or for ``auto`` the name of what it chose."""
    chosen = described.get("chose")
    return effective_name(chosen) if isinstance(chosen, dict) else str(described.get("name"))
