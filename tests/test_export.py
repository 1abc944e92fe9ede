"""Export: per-image JSON, CSV rows, COCO (read back with pycocotools) and overlays, for proposals
and for classified defects alike."""

import csv
import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from defectkit.defect import defects_from_record, image_record
from defectkit.export import (
    CocoWriter,
    colour_of,
    csv_rows,
    defect_mask,
    overlay,
    write_csv,
    write_json,
    write_overlay,
)
from defectkit.geometry import defects_from_mask
from defectkit.images import read_image
from tests.conftest import textured


@pytest.fixture
def defects():
    """A ring (a region with a hole), a one-pixel-wide line and a blob, as Defects of one image."""
    mask = np.zeros((120, 160), dtype=np.uint8)
    cv2.circle(mask, (40, 50), 20, 1, -1)
    cv2.circle(mask, (40, 50), 8, 0, -1)
    mask[100, 60:140] = 1
    cv2.ellipse(mask, (120, 40), (15, 9), 30, 0, 360, 1, -1)
    found = defects_from_mask(textured(), mask.astype(bool), "part.png")
    for number, d in enumerate(found, start=1):
        d.id = number
    return found


def classified(defects):
    for d, (subtype, category) in zip(defects, [("blowhole", "surface"), ("crack", "structural"), ("crack", "structural")]):
        d.category, d.subtype, d.confidence = category, subtype, 0.8
        d.scores = {"category": {category: 0.9}, "subtype": {subtype: 0.8}}
    return defects


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_coco_file_loads_with_pycocotools_and_masks_come_back(tmp_path, defects, segmentation):
    writer = CocoWriter(segmentation=segmentation)
    writer.add("part.png", (160, 120), defects)
    writer.add("clean.png", (160, 120), [])
    path = writer.write(tmp_path / "coco.json")
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) == len(defects) == 3
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["defect"]
    for annotation, d in zip(coco.loadAnns(coco.getAnnIds()), defects):
        back = coco.annToMask(annotation).astype(bool)
        truth = defect_mask(d)
        if segmentation == "rle":
            assert np.array_equal(back, truth)  # exact, holes included
        else:
            assert (back & truth).sum() / (back | truth).sum() > 0.7
    results = coco.loadRes(writer.results())
    assert len(results.getAnnIds()) == 3


def test_classified_defects_get_their_subtypes_as_categories(tmp_path, defects):
    writer = CocoWriter(categories=["blowhole", "crack", "fray"], supercategories={"blowhole": "surface", "crack": "structural"})
    writer.add("part.png", (160, 120), classified(defects))
    data = json.loads(writer.write(tmp_path / "coco.json").read_text())
    assert [(c["id"], c["name"], c["supercategory"]) for c in data["categories"]] == [
        (1, "blowhole", "surface"), (2, "crack", "structural"), (3, "fray", "fray")]
    assert [a["category_id"] for a in data["annotations"]] == [1, 2, 2]
    assert all(a["score"] == 0.8 for a in data["annotations"])


def test_csv_has_one_row_per_defect(tmp_path, defects):
    write_csv(tmp_path / "defects.csv", csv_rows(classified(defects)) + csv_rows([]))
    with open(tmp_path / "defects.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert rows[0]["image"] == "part.png" and rows[0]["subtype"] == "blowhole" and rows[0]["confidence"] == "0.8"
    assert int(rows[1]["area"]) == defects[1].area
    assert len(rows[0]["polygon"].split(";")) == defects[0].edges


def test_image_json_round_trips(tmp_path, defects):
    record = image_record("part.png", (160, 120), classified(defects), proposer={"name": "classical"})
    write_json(tmp_path / "part.json", record)
    back = json.loads((tmp_path / "part.json").read_text())
    assert back["size"] == [160, 120] and back["proposer"] == {"name": "classical"}
    assert "image" not in back["defects"][0]  # said once, at the top
    again = defects_from_record(back)
    assert [d.polygon for d in again] == [d.polygon for d in defects]
    assert again[0].scores == defects[0].scores and again[0].image_size == (160, 120)
    for d, original in zip(again, defects):  # masks rebuilt from polygons and holes
        rebuilt, truth = defect_mask(d), defect_mask(original)
        assert (rebuilt & truth).sum() / (rebuilt | truth).sum() > 0.8
    ring = next(d for d in again if d.holes)
    assert not defect_mask(ring)[50, 40]  # the hole stays a hole


def test_overlay_png_has_the_image_size_and_colours_by_subtype(tmp_path, defects):
    image = textured()
    write_overlay(tmp_path / "part.png", image, defects)
    plain = read_image(tmp_path / "part.png")
    assert plain.shape == image.shape
    red = np.array(colour_of(None))
    assert (np.abs(plain.astype(int) - red).sum(axis=2) < 40).sum() > 50  # unclassified: one colour
    coloured = overlay(image, classified(defects))
    for name in ("blowhole", "crack"):
        assert (np.abs(coloured.astype(int) - np.array(colour_of(name))).sum(axis=2) < 40).any()
    assert colour_of("blowhole") != colour_of("crack")
    assert not np.array_equal(coloured, image)  # the gray input is not modified in place


def test_classes_take_distinct_colours_by_their_place_in_the_taxonomy():
    from defectkit.export import PALETTE, colour_of

    classes = ["break", "crack", "fray", "blowhole", "uneven", "uncertain"]
    colours = [colour_of(c, classes) for c in classes]
    assert len(set(colours)) == len(classes) and colours[0] == PALETTE[0]
    assert colour_of("unknown") in PALETTE and colour_of(None) not in PALETTE
