import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defectkit.cli import app
from defectkit.crops import CropSpec
from defectkit.data.manifest import read_manifest
from defectkit.errors import DefectkitError
from defectkit.jobs.extract import ExtractOptions, extract
from defectkit.images import read_mask
from defectkit.taxonomy import Taxonomy
from tests.conftest import SAMPLE, TAXONOMY, textured, write

SMALL = ExtractOptions(crop=CropSpec(size=32))


def generated_masks_dataset(root: Path, seed: int = 0) -> Path:
    """Two defect images (a pore, a crack) and one defect-free image, in the mask-pair layout."""
    pore = textured(seed=1 + 10 * seed)
    pore_mask = np.zeros(pore.shape[:2], np.uint8)
    cv2.circle(pore_mask, (50, 40), 8, 255, -1)
    pore[pore_mask > 0] = 60
    write(root / "MT_Blowhole" / "a.jpg", pore)
    write(root / "MT_Blowhole" / "a.png", pore_mask)
    crack = textured(seed=2 + 10 * seed)
    crack_mask = np.zeros(crack.shape[:2], np.uint8)
    cv2.line(crack_mask, (20, 20), (120, 90), 255, 3)
    write(root / "MT_Crack" / "nested" / "b.png", crack)
    write(root / "MT_Crack" / "nested" / "b_mask.png", crack_mask)
    write(root / "MT_Free" / "c.jpg", textured(seed=3 + 10 * seed))
    return root


def run(src, out, **options):
    opts = ExtractOptions(**{"crop": CropSpec(size=32), **options})
    return extract(src, out, Taxonomy.load(TAXONOMY), opts, progress=False)


def test_masks_layout_end_to_end(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    summary = run(src, tmp_path / "out", background_per_image=3)
    records = read_manifest(tmp_path / "out")
    defects = [r for r in records if r["category"] != "background"]
    assert sorted(r["subtype"] for r in defects) == ["blowhole", "crack"]
    background = [r for r in records if r["category"] == "background"]
    assert len(background) == 3 and all(r["image"].endswith("c.jpg") for r in background)
    assert summary.crops[("surface", "blowhole")] == 1 and not summary.skipped and not summary.empty
    pore = next(r for r in defects if r["subtype"] == "blowhole")
    assert pore["label"] == "MT_Blowhole" and pore["edges"] > 6
    assert abs(pore["area"] - np.pi * 64) < 30
    crop = cv2.imread(pore["crop_path"])
    assert crop.shape == (32, 32, 3)
    assert read_mask(pore["mask_path"]).sum() > 0
    # the mask file next to an image is never read as an image of its own
    assert not any(Path(r["image"]).name in ("a.png", "b_mask.png") for r in records)


def test_background_regions_have_real_defect_shapes(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    run(src, tmp_path / "out", background_per_image=6)
    records = read_manifest(tmp_path / "out")
    defect_areas = {r["area"] for r in records if r["category"] != "background"}
    background = [r for r in records if r["category"] == "background"]
    assert len(background) == 6
    assert all(r["area"] in defect_areas for r in background)
    assert all(r["origin"] == "sampled" for r in background)
    assert len({tuple(r["bbox"][:2]) for r in background}) == 6  # different places


def test_background_in_defect_images_avoids_the_defects(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    run(src, tmp_path / "out", background_per_image=0, background_in_defect_images=2)
    records = read_manifest(tmp_path / "out")
    pore_mask = read_mask(src / "MT_Blowhole" / "a.png")
    sampled = [r for r in records if r["category"] == "background" and r["image"].endswith("a.jpg")]
    assert len(sampled) == 2
    for r in sampled:
        x, y, w, h = r["bbox"]
        region = np.zeros_like(pore_mask)
        cv2.fillPoly(region.view(np.uint8), [np.array(r["polygon"], np.int32)], 1)
        assert not (region & pore_mask).any()


def test_same_seed_same_output_other_seed_other_backgrounds(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    run(src, tmp_path / "a", seed=3)
    run(src, tmp_path / "b", seed=3)
    run(src, tmp_path / "c", seed=4)
    text = lambda d: (tmp_path / d / "manifest.jsonl").read_text()
    assert text("a") == text("b")
    assert text("a") != text("c")
    crops = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in crops)


def test_shipped_real_sample(tmp_path):
    summary = run(SAMPLE, tmp_path / "out")
    records = read_manifest(tmp_path / "out")
    images_with_crops = {r["image"] for r in records if r["category"] != "background"}
    defect_images = [p for p in SAMPLE.rglob("*.jpg") if "MT_Free" not in str(p)]
    assert len(summary.empty) == 1 and "exp3_num_45042" in summary.empty[0]
    assert len(images_with_crops) == len(defect_images) - 1
    assert {r["subtype"] for r in records} == {"blowhole", "break", "crack", "fray", "uneven", "background"}
    assert sum(r["category"] == "background" for r in records) == 3 * 2
    assert not summary.skipped


def test_bad_files_are_skipped_and_named_the_rest_is_written(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    (src / "MT_Blowhole" / "corrupt.jpg").write_bytes(b"garbage")
    write(src / "MT_Blowhole" / "corrupt.png", np.zeros((120, 160), np.uint8))
    write(src / "MT_Blowhole" / "sized.jpg", textured())
    write(src / "MT_Blowhole" / "sized.png", np.zeros((60, 80), np.uint8))
    write(src / "MT_Scratch" / "d.jpg", textured())
    write(src / "MT_Scratch" / "d.png", np.full((120, 160), 255, np.uint8))
    write(src / "MT_Crack" / "nomask.jpg", textured())
    empty = np.zeros((120, 160), np.uint8)
    write(src / "MT_Crack" / "e.jpg", textured())
    write(src / "MT_Crack" / "e.png", empty)
    summary = run(src, tmp_path / "out")
    reasons = {Path(path).name: reason for path, reason in summary.skipped}
    assert "not a readable image" in reasons["corrupt.jpg"]
    assert "sized.png: mask is 80x60 but its image sized.jpg is 160x120" in reasons["sized.jpg"]
    assert "'MT_Scratch'" in reasons["d.jpg"] and "magnetic-tile.yaml" in reasons["d.jpg"]
    assert "no mask" in reasons["nomask.jpg"]
    assert [Path(p).name for p in summary.empty] == ["e.jpg"]
    records = read_manifest(tmp_path / "out")
    assert {"blowhole", "crack"} <= {r["subtype"] for r in records}


def test_cli_exit_codes_and_summary(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    runner = CliRunner()
    args = ["extract", str(src), str(tmp_path / "out"), "--taxonomy", str(TAXONOMY), "--crop-size", "32", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "blowhole" in result.output and "total" in result.output
    (src / "MT_Crack" / "broken.jpg").write_bytes(b"nope")
    write(src / "MT_Crack" / "broken.png", np.zeros((10, 10), np.uint8))
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "broken.jpg" in result.output and "skipped" in result.output
    result = runner.invoke(app, ["extract", str(tmp_path / "nowhere"), str(tmp_path / "o"), "--taxonomy", str(TAXONOMY)])
    assert result.exit_code == 2 and "not found" in result.output


def test_manifest_is_never_half_written(tmp_path, monkeypatch):
    src = generated_masks_dataset(tmp_path / "src")
    run(src, tmp_path / "out")
    before = (tmp_path / "out" / "manifest.jsonl").read_text()
    import defectkit.images as images

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(images.os, "replace", crash)
    with pytest.raises(OSError):
        run(src, tmp_path / "out", seed=9)
    assert (tmp_path / "out" / "manifest.jsonl").read_text() == before
    assert not list((tmp_path / "out").glob(".manifest.jsonl*"))


def test_voc_layout(tmp_path):
    src = tmp_path / "voc"
    write(src / "JPEGImages" / "v1.jpg", textured())
    write(src / "JPEGImages" / "v2.jpg", textured(seed=5))
    (src / "Annotations").mkdir(parents=True)
    box = "<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"
    (src / "Annotations" / "v1.xml").write_text(
        f"<annotation><filename>v1.jpg</filename>{box.format('crack', 10, 10, 49, 29)}{box.format('MT_Blowhole', 80, 60, 99, 79)}</annotation>"
    )
    (src / "Annotations" / "v2.xml").write_text("<annotation><filename>v2.jpg</filename></annotation>")
    (src / "Annotations" / "v3.xml").write_text("<annotation><filename>gone.jpg</filename></annotation>")
    (src / "Annotations" / "v4.xml").write_text("<annotation><filename>v1.jpg")
    write(src / "JPEGImages" / "v5.jpg", textured(seed=6))
    (src / "Annotations" / "v5.xml").write_text(f"<annotation><filename>v5</filename>{box.format('crack', 20, 20, 59, 39)}</annotation>")
    summary = run(src, tmp_path / "out", format="voc")
    records = read_manifest(tmp_path / "out")
    assert any(r["image"].endswith("v5.jpg") and r["subtype"] == "crack" for r in records)  # <filename> without extension
    crack = next(r for r in records if r["subtype"] == "crack")
    assert crack["bbox"] == [10, 10, 40, 20] and crack["area"] == 800 and crack["edges"] == 4
    assert sum(r["subtype"] == "blowhole" for r in records) == 1
    assert sum(r["image"].endswith("v2.jpg") and r["category"] == "background" for r in records) == 2
    reasons = {Path(p).name: why for p, why in summary.skipped}
    assert "'gone.jpg' is not found" in reasons["v3.xml"]
    assert "not a readable VOC xml" in reasons["v4.xml"]


def test_yolo_layout(tmp_path):
    src = tmp_path / "yolo"
    write(src / "images" / "y1.jpg", textured())
    write(src / "images" / "y2.jpg", textured(seed=5))
    write(src / "images" / "y3.jpg", textured(seed=6))
    (src / "labels").mkdir(parents=True)
    (src / "data.yaml").write_text("names:\n  0: crack\n  1: MT_Blowhole\n")
    (src / "labels" / "y1.txt").write_text("0 0.1875 0.1667 0.25 0.1667\n1 0.5625 0.5833 0.125 0.1667")  # no final newline
    (src / "labels" / "y2.txt").write_text("")
    (src / "labels" / "y3.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    write(src / "images" / "y4.jpg", textured(seed=7))
    (src / "labels" / "y4.txt").write_text("0 1.5 1.5 0.1 0.1\n")  # wholly outside the image
    write(src / "images" / "y5.jpg", textured(seed=8))
    (src / "labels" / "y5.txt").write_text("0 0.98 0.5 0.2 0.2\n")  # partly outside: kept, cut at the edge
    summary = run(src, tmp_path / "out", format="yolo")
    records = read_manifest(tmp_path / "out")
    crack = next(r for r in records if r["subtype"] == "crack")
    assert crack["bbox"] == [10, 10, 40, 20] and crack["area"] == 800
    assert sum(r["subtype"] == "blowhole" for r in records) == 1
    assert sum(r["image"].endswith("y2.jpg") and r["category"] == "background" for r in records) == 2
    reasons = {Path(p).name: why for p, why in summary.skipped}
    assert "class 7 is not in the data set's names" in reasons["y3.jpg"]
    assert "lies outside the 160x120 image" in reasons["y4.jpg"]
    (edge,) = [r for r in records if r["image"].endswith("y5.jpg")]
    x, y, w, h = edge["bbox"]
    assert edge["subtype"] == "crack" and x + w == 160 and 0 <= y and y + h <= 120


def test_coco_layout_with_polygons_and_rle(tmp_path):
    from pycocotools import mask as mask_utils

    src = tmp_path / "coco"
    write(src / "images" / "k1.png", textured())
    rle_mask = np.zeros((120, 160), np.uint8)
    cv2.circle(rle_mask, (100, 60), 12, 1, -1)
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode()
    data = {
        "images": [{"id": 1, "file_name": "k1.png", "width": 160, "height": 120}],
        "categories": [{"id": 1, "name": "crack"}, {"id": 2, "name": "blowhole"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10, 10, 60, 10, 60, 20, 10, 20]], "bbox": [10, 10, 50, 10]},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rle, "bbox": [88, 48, 25, 25]},
        ],
    }
    (src / "instances.json").write_text(json.dumps(data))
    summary = run(src, tmp_path / "out", format="coco")
    records = read_manifest(tmp_path / "out")
    assert sorted(r["subtype"] for r in records) == ["blowhole", "crack"] and not summary.skipped
    pore = next(r for r in records if r["subtype"] == "blowhole")
    assert pore["area"] == int(rle_mask.sum())


BAD_SEGMENTATIONS = {
    "huge": [[10, 10, 1e9, 10, 60, 20]],  # crashed pycocotools (exit 139)
    "odd": [[1, 2, 3]],
    "empty": [[]],
    "no size": {"counts": [0, 10]},
    "negative": {"size": [120, 160], "counts": [-5, 19205]},
    "other size": {"size": [60, 80], "counts": [0, 4800]},
}


def test_coco_bad_annotations_and_paths_outside_skip_their_image_only(tmp_path):
    src = tmp_path / "coco"
    write(tmp_path / "secret.png", textured(seed=9))  # beside the data set, never to be read
    good = {"id": 1, "file_name": "good.png", "width": 160, "height": 120}
    images, annotations = [good], [{"id": 1, "image_id": 1, "category_id": 1,
                                    "segmentation": [[10, 10, 60, 10, 60, 20, 10, 20]], "bbox": [10, 10, 50, 10]}]
    write(src / "good.png", textured())
    for n, (name, segmentation) in enumerate(BAD_SEGMENTATIONS.items(), start=2):
        write(src / f"{name}.png", textured(seed=n))
        images.append({"id": n, "file_name": f"{name}.png", "width": 160, "height": 120})
        annotations.append({"id": n, "image_id": n, "category_id": 1, "segmentation": segmentation, "bbox": [10, 10, 5, 5]})
    for n, file_name in ((20, "../secret.png"), (21, str(tmp_path / "secret.png"))):
        images.append({"id": n, "file_name": file_name, "width": 160, "height": 120})
        annotations.append({"id": n, "image_id": n, "category_id": 1, "segmentation": [[10, 10, 60, 10, 60, 20]], "bbox": [10, 10, 50, 10]})
    (src / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                    "categories": [{"id": 1, "name": "crack"}]}))
    summary = run(src, tmp_path / "out", format="coco")
    assert [r["image"] for r in read_manifest(tmp_path / "out")] == [str(src / "good.png")]
    reasons = dict(summary.skipped)
    assert len(reasons) == len(BAD_SEGMENTATIONS) + 2, reasons
    assert all("annotation" in reasons[str(src / f"{name}.png")] for name in BAD_SEGMENTATIONS)
    assert "far outside" in reasons[str(src / "huge.png")] and "RLE size" in reasons[str(src / "no size.png")]
    assert "is not the image's" in reasons[str(src / "other size.png")] and "non-negative" in reasons[str(src / "negative.png")]
    assert sum("outside the data set" in reason for reason in reasons.values()) == 2


def test_crops_layout_uses_alpha_or_mask_file(tmp_path):
    src = tmp_path / "crops"
    rgba = np.dstack([textured(40, 60)[:, :, 0]] * 3 + [np.zeros((40, 60), np.uint8)])
    rgba[10:20, 10:30, 3] = 255
    write(src / "crack" / "x.png", rgba)
    write(src / "blowhole" / "y.png", textured(50, 50))
    m = np.zeros((50, 50), np.uint8)
    cv2.circle(m, (25, 25), 5, 255, -1)
    write(src / "blowhole" / "y_mask.png", m)
    write(src / "uneven" / "z.png", textured(30, 30))
    run(src, tmp_path / "out", format="crops")
    records = {r["subtype"]: r for r in read_manifest(tmp_path / "out")}
    assert set(records) == {"crack", "blowhole", "uneven"}
    assert records["crack"]["area"] == 200 and records["crack"]["edges"] == 4
    assert records["blowhole"]["area"] == int((m > 0).sum())
    assert records["uneven"]["area"] == 900
    assert cv2.imread(records["crack"]["crop_path"]).shape == (32, 32, 3)


def test_unknown_format_and_missing_source(tmp_path):
    with pytest.raises(DefectkitError, match="unknown data set format"):
        run(SAMPLE, tmp_path / "o", format="darknet")
    with pytest.raises(DefectkitError, match="not found"):
        run(tmp_path / "nothing", tmp_path / "o")


def test_manifest_pointing_to_missing_crop(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    run(src, tmp_path / "out")
    records = read_manifest(tmp_path / "out")
    Path(records[0]["crop_path"]).unlink()
    with pytest.raises(DefectkitError, match="missing on disk"):
        read_manifest(tmp_path / "out")


def test_hard_negatives_are_proposals_that_touch_no_defect(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    image = textured(seed=3)
    image[90:100, 10:40] = 40  # a dark scratch-like mark on the defect-free image, not annotated
    write(src / "MT_Free" / "c.jpg", image)
    run(src, tmp_path / "out", background_per_image=0, negatives_from="classical")
    records = read_manifest(tmp_path / "out")
    negatives = [r for r in records if r["origin"] == "negative"]
    assert negatives and all(r["category"] == "background" for r in negatives)
    on_free = [r for r in negatives if r["image"].endswith("c.jpg")]
    assert any(r["bbox"][1] >= 85 and r["bbox"][0] <= 40 for r in on_free)  # the mark was proposed and kept
    pore = read_mask(src / "MT_Blowhole" / "a.png")
    for r in negatives:
        if r["image"].endswith("a.jpg"):
            region = np.zeros(pore.shape, np.uint8)
            cv2.fillPoly(region, [np.array(r["polygon"], np.int32)], 1)
            assert not (region.astype(bool) & pore).any()


def test_proposals_matching_a_defect_become_crops_of_its_subtype(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    run(src, tmp_path / "out", background_per_image=0, negatives_from="classical")
    matched = [r for r in read_manifest(tmp_path / "out") if r["origin"] == "proposal"]
    pores = [r for r in matched if r["image"].endswith("a.jpg")]
    assert pores and all(r["subtype"] == "blowhole" and r["label"] == "MT_Blowhole" for r in pores)
    truth = read_mask(src / "MT_Blowhole" / "a.png")
    for r in pores:  # each outlines the pore as the proposer saw it, overlapping the drawn one enough
        region = np.zeros(truth.shape, np.uint8)
        cv2.fillPoly(region, [np.array(r["polygon"], np.int32)], 1)
        assert (region.astype(bool) & truth).sum() / (region.astype(bool) | truth).sum() >= 0.3
    assert not any(r["image"].endswith("c.jpg") for r in matched)
    run(src, tmp_path / "plain", background_per_image=0, negatives_from="classical", proposal_positives=False)
    assert not any(r["origin"] == "proposal" for r in read_manifest(tmp_path / "plain"))


def test_a_defect_image_with_an_empty_mask_gives_no_background(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    image = textured(seed=4)
    image[90:100, 10:40] = 40  # the defect is there, but its mask is empty: nothing on it is known background
    write(src / "MT_Crack" / "e.jpg", image)
    write(src / "MT_Crack" / "e.png", np.zeros(image.shape[:2], np.uint8))
    write(src / "MT_Free" / "c.jpg", image)  # the same mark on a clean image is a hard negative
    summary = run(src, tmp_path / "out", background_per_image=0, negatives_from="classical")
    assert [Path(p).name for p in summary.empty] == ["e.jpg"]
    records = read_manifest(tmp_path / "out")
    assert not any(r["image"].endswith("e.jpg") for r in records)
    assert any(r["image"].endswith("c.jpg") and r["origin"] == "negative" for r in records)


def test_a_crop_row_without_its_image_is_named_by_line(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    run(src, tmp_path / "out")
    manifest = tmp_path / "out" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    row = json.loads(lines[1])
    del row["image"]
    manifest.write_text("\n".join([lines[0], json.dumps(row), *lines[2:]]) + "\n")
    result = CliRunner().invoke(app, ["split", str(tmp_path / "out"), str(tmp_path / "parts")])
    assert result.exit_code == 2 and "line 2: no image" in result.output, result.output
    manifest.write_text("[1, 2]\n")
    with pytest.raises(DefectkitError, match="line 1: a crop must be a JSON object"):
        read_manifest(tmp_path / "out")


def test_an_image_name_that_is_not_utf8_is_extracted_and_listed(tmp_path):
    import os

    src = generated_masks_dataset(tmp_path / "src")
    stem = os.fsdecode(b"\xff-pore")
    try:  # written by Python: OpenCV's imwrite crashes on such a name
        for suffix in (".jpg", ".png"):
            os.rename(src / "MT_Blowhole" / f"a{suffix}", src / "MT_Blowhole" / f"{stem}{suffix}")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    result = CliRunner().invoke(app, ["extract", str(src), str(tmp_path / "out"), "-t", str(TAXONOMY), "--crop-size", "32"])
    assert result.exit_code == 0, result.output
    images = {os.fsencode(r["image"]) for r in read_manifest(tmp_path / "out")}
    assert os.fsencode(str(src / "MT_Blowhole" / f"{stem}.jpg")) in images


def test_byte_identical_copies_of_an_image_are_one_group(tmp_path):
    from defectkit.labelled import load_labelled

    src = generated_masks_dataset(tmp_path / "src")
    for suffix in (".jpg", ".png"):  # a twin of a.jpg under another name, as public data sets have them
        (src / "MT_Blowhole" / f"twin{suffix}").write_bytes((src / "MT_Blowhole" / f"a{suffix}").read_bytes())
    run(src, tmp_path / "out")
    crops = load_labelled(tmp_path / "out", Taxonomy.load(TAXONOMY))
    by_image = {}
    for record, group in zip(crops.records, crops.groups):
        by_image.setdefault(Path(record["image"]).stem, set()).add(group)
    assert by_image["a"] == by_image["twin"] and len(by_image["a"]) == 1
    assert by_image["a"] != by_image["b"]


def test_the_cli_takes_hard_negatives_by_default_and_records_their_proposer(tmp_path):
    src = generated_masks_dataset(tmp_path / "src")
    result = CliRunner().invoke(app, ["extract", str(src), str(tmp_path / "out"), "-t", str(TAXONOMY), "--crop-size", "32", "-q"])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "out" / "extract.json").read_text())
    assert settings["negatives_from"] == "auto" and settings["negatives_proposer"]["name"] == "auto"
    assert settings["negatives_proposer"]["chose"]["name"] == "classical"
    result = CliRunner().invoke(app, ["extract", str(src), str(tmp_path / "none"), "-t", str(TAXONOMY), "--negatives-from", "none", "-q"])
    assert result.exit_code == 0 and json.loads((tmp_path / "none" / "extract.json").read_text())["negatives_proposer"] is None
