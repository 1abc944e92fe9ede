"""YOLO boxes: SRC holds a ``data.yaml`` with the class ``names`` and the images; each image's
``<name>.txt`` (``class x_centre y_centre width height`` per line, normalised to 0-1) lies in the
parallel labels folder (``images/`` -> ``labels/``, or the folders the yaml names) or beside the image.
An image with an empty label file, or none, is defect-free (the YOLO convention)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import yaml

from defectkit.data import Annotation, Sample, find_images
from defectkit.errors import DefectkitError, InputError
from defectkit.images import read_image
from defectkit.yaml_files import load_yaml


def read_yolo(src: Path) -> Iterator[Sample]:
    names, image_dir, label_dir = _read_yaml(src)
    for image_path in find_images(src):
        label_path = _label_path(src, image_path, image_dir, label_dir)
        yield Sample(image_path, _loader(image_path, label_path, names), defect_free=_empty(label_path))


def _read_yaml(src: Path) -> tuple[dict[int, str], str, str]:
    found = [p for p in sorted(src.glob("*.yaml")) + sorted(src.glob("*.yml"))]
    if not found:
        raise DefectkitError(f"{src}: no data.yaml with the class names; a YOLO data set needs one (names: [a, b, ...])")
    try:
        data = load_yaml(found[0].read_text()) or {}
        names = data["names"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise DefectkitError(f"{found[0]}: no readable class 'names' ({exc})") from exc
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise DefectkitError(f"{found[0]}: 'names' must be a list or a mapping of class number to name")
    folder = lambda key, default: Path(str(data.get(key) or default)).name  # noqa: E731
    return {int(k): str(v) for k, v in names.items()}, folder("images", "images"), folder("labels", "labels")


def _label_path(src: Path, image_path: Path, image_dir: str, label_dir: str) -> Path:
    parts = list(image_path.relative_to(src).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == image_dir:
            parts[i] = label_dir
            return (src / Path(*parts)).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def _empty(label_path: Path) -> bool:
    return not label_path.is_file() or not label_path.read_text().strip()


def _loader(image_path: Path, label_path: Path, names: dict[int, str]):
    def load():
        image = read_image(image_path)
        height, width = image.shape[:2]
        if not label_path.is_file():
            return image, []
        out = []
        for number, line in enumerate(label_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                cls, xc, yc, w, h = line.split()[:5]
                cls, xc, yc, w, h = int(cls), float(xc), float(yc), float(w), float(h)
            except ValueError as exc:
                raise InputError(label_path, f"line {number} is not 'class x_centre y_centre width height'") from exc
            if cls not in names:
                raise InputError(label_path, f"line {number}: class {cls} is not in the data set's names ({len(names)} classes)")
            x0, x1 = (xc - w / 2) * width, (xc + w / 2) * width
            y0, y1 = (yc - h / 2) * height, (yc + h / 2) * height
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height or w <= 0 or h <= 0:
                raise InputError(label_path, f"line {number}: the box of {names[cls]!r} lies outside the {width}x{height} image")
            corners = [[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]]
            out.append(Annotation(names[cls], polygon=corners, is_box=True))
        return image, out

    return load
