"""Pascal VOC: xml files anywhere under SRC; each ``<filename>`` is looked up anywhere under SRC (by
its name, or by its stem when it has no extension, or else the image named like the xml) and each
``<object>`` becomes one defect whose region is its box."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

from defectkit.data import Annotation, Sample, find_images
from defectkit.errors import InputError
from defectkit.images import read_image


def read_voc(src: Path) -> Iterator[Sample]:
    images_by_name: dict[str, list[Path]] = {}
    images_by_stem: dict[str, list[Path]] = {}
    for path in find_images(src):
        images_by_name.setdefault(path.name, []).append(path)
        images_by_stem.setdefault(path.stem, []).append(path)
    for xml_path in sorted(src.rglob("*.xml")):
        try:
            filename, objects = _parse(xml_path)
        except InputError as exc:
            yield Sample(xml_path, _raise(exc))
            continue
        # some data sets write <filename> without its extension: then the image of that name, or of the xml's
        candidates = (images_by_name.get(Path(filename).name) or images_by_stem.get(Path(filename).name)
                      or images_by_stem.get(xml_path.stem, []))
        if not candidates:
            yield Sample(xml_path, _raise(InputError(xml_path, f"its <filename> {filename!r} is not found under {src}")))
            continue
        image_path = _closest(candidates, xml_path)
        yield Sample(image_path, _loader(image_path, xml_path, objects), defect_free=not objects)


def _parse(xml_path: Path) -> tuple[str, list[tuple[str, list[float]]]]:
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(xml_path, f"not a readable VOC xml ({exc})") from exc
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise InputError(xml_path, "has no <filename>")
    objects = []
    for index, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError) as exc:
            raise InputError(xml_path, f"object {index} ({name or 'unnamed'}) has no valid <bndbox>") from exc
        if not name:
            raise InputError(xml_path, f"object {index} has no <name>")
        if xmax < xmin or ymax < ymin:
            raise InputError(xml_path, f"object {index} ({name}) has an inverted box")
        objects.append((name, [[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]]))
    return filename, objects


def _closest(candidates: list[Path], xml_path: Path) -> Path:
    """Of several images with the same name, the one sharing the longest folder prefix with the xml."""
    def shared(path: Path) -> int:
        return sum(1 for a, b in zip(path.parent.parts, xml_path.parent.parts) if a == b)

    return max(candidates, key=lambda p: (shared(p), -len(p.parts)))


def _raise(exc: InputError):
    def load():
        raise exc

    return load


def _loader(image_path: Path, xml_path: Path, objects):
    def load():
        image = read_image(image_path)
        height, width = image.shape[:2]
        for name, corners in objects:
            xmin, ymin = corners[0]
            xmax, ymax = corners[2]
            if xmin >= width or ymin >= height or xmax < 0 or ymax < 0:
                raise InputError(xml_path, f"box of {name!r} lies outside the {width}x{height} image")
        return image, [Annotation(name, polygon=corners, is_box=True) for name, corners in objects]

    return load
