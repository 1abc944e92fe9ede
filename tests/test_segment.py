"""`defectkit segment`: a folder (or list) of images in, per-image JSON and overlays, one COCO
file and one CSV out; a bad image is reported in errors.jsonl and the others are still written."""

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO
from typer.testing import CliRunner

from defectkit.jobs.batch import expand_inputs, output_names
from defectkit.cli import app
from defectkit.geometry import connected_regions
from defectkit.images import read_image, read_mask
from tests.conftest import SAMPLE, textured, write


def pored(seed: int, centre=(60, 50)) -> np.ndarray:
    image = textured(seed=seed)
    cv2.circle(image, centre, 7, (50, 50, 50), -1)
    return image


def folder(root: Path) -> Path:
    write(root / "line1" / "a.png", pored(1))
    write(root / "line1" / "a_mask.png", np.zeros((120, 160), np.uint8))  # a mask beside its image: not an input
    write(root / "line2" / "deep" / "b.jpg", pored(2, (100, 70)))
    (root / "line2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_segment_a_folder_with_a_corrupt_image(tmp_path):
    src, out = folder(tmp_path / "in"), tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(src), "--out", str(out), "--proposer", "classical", "-q"])
    assert result.exit_code == 1, result.output
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["image"].endswith("broken.jpg") and "not a readable image" in errors[0]["message"]
    for name, centre in (("a", (60, 50)), ("b", (100, 70))):
        record = json.loads((out / f"{name}.json").read_text())
        assert record["size"] == [160, 120] and record["proposer"]["name"] == "classical"
        assert record["proposer"]["dark_threshold"]  # the settings are recorded too
        assert any(d["bbox"][0] <= centre[0] <= d["bbox"][0] + d["bbox"][2] for d in record["defects"])
        assert read_image(out / f"{name}.png").shape == (120, 160, 3)
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) >= 2
    assert not (out / "a_mask.json").exists()
    rows = (out / "defects.csv").read_text().splitlines()
    assert len(rows) == 1 + len(coco.getAnnIds())


def test_resume_keeps_earlier_results_and_still_writes_complete_files(tmp_path):
    src, out = folder(tmp_path / "in"), tmp_path / "out"
    runner = CliRunner()
    runner.invoke(app, ["segment", str(src), "-o", str(out), "-p", "classical", "-q"])
    before = COCO(str(out / "coco.json"))
    (out / "a.json").write_text((out / "a.json").read_text().replace('"classical"', '"kept"'))
    result = runner.invoke(app, ["segment", str(src), "-o", str(out), "-p", "classical", "-q", "--resume"])
    assert "1 kept from before" not in result.output and "2 kept from before" in result.output
    assert json.loads((out / "a.json").read_text())["proposer"]["name"] == "kept"
    assert len(COCO(str(out / "coco.json")).getAnnIds()) == len(before.getAnnIds())


def test_inputs_from_a_list_file_and_colliding_names(tmp_path):
    write(tmp_path / "x" / "part.png", pored(1))
    write(tmp_path / "y" / "part.png", pored(2))
    listing = tmp_path / "inputs.txt"
    listing.write_text("# today's parts\nx/part.png\n\ny/part.png  # second line\nx/part.png\n")
    paths = expand_inputs([listing])
    assert paths == [tmp_path / "x" / "part.png", tmp_path / "y" / "part.png"]
    names = output_names(paths)
    assert len(set(names.values())) == 2 and all(n.endswith("part") for n in names.values())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(listing), "-o", str(out), "-p", "classical", "-q"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.json"))) == 3  # two images and coco.json


def test_given_proposer_writes_the_ground_truth_regions(tmp_path):
    out = tmp_path / "out"
    image = SAMPLE / "MT_Crack" / "Imgs" / "exp1_num_249594.jpg"
    result = CliRunner().invoke(app, ["segment", str(image), "-o", str(out), "-p", "given", "--min-area", "1", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "exp1_num_249594.json").read_text())
    regions = connected_regions(read_mask(image.with_suffix(".png")))
    assert len(record["defects"]) == len(regions)
    assert sorted(d["area"] for d in record["defects"]) == sorted(r.area for r in regions)


def test_bad_proposer_settings_are_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["segment", str(SAMPLE), "-o", str(tmp_path), "-p", "classical", "-O", "dark_window"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
