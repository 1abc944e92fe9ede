"""The review loop's formats: a run's predictions out for review (Label Studio, COCO, CVAT), ranked
least confident first, and a reviewed Label Studio export back in as a labelled data set."""

import json
from xml.etree import ElementTree

import numpy as np
import pytest
from typer.testing import CliRunner

from defectkit.cli import app
from defectkit.data import read_dataset
from defectkit.errors import DefectkitError
from defectkit.images import atomic_write_text
from defectkit.review import export_review, priority
from tests.conftest import write


def record(image, confidences):
    """A classify-like record with one square defect per confidence."""
    defects = []
    for i, c in enumerate(confidences):
        x = 10 + 30 * i
        defects.append({"id": i + 1, "polygon": [[x, 10], [x + 20, 10], [x + 20, 30], [x, 30]], "holes": [], "bbox": [x, 10, 21, 21],
                        "area": 441, "edges": 4, "category": "surface", "subtype": "blowhole" if i == 0 else "uneven",
                        "confidence": c, "scores": {"subtype": {"blowhole": c, "uneven": 1 - c}}})
    return {"image": str(image), "size": [160, 120], "defects": defects, "proposer": {"name": "classical"}, "model": {"path": "m"}}


@pytest.fixture
def run(tmp_path):
    root, out = tmp_path / "images", tmp_path / "run"
    for name, confidences in (("sure", [0.99]), ("doubtful", [0.55, 0.9]), ("clean", [])):
        write(root / "line" / f"{name}.png", np.full((120, 160, 3), 128, np.uint8))
        atomic_write_text(out / f"{name}.json", json.dumps(record(root / "line" / f"{name}.png", confidences)))
    atomic_write_text(out / "coco.json", json.dumps({"images": []}))  # a run file, not an image record
    return root, out


def test_label_studio_tasks_come_least_confident_first_with_percent_polygons(run, tmp_path):
    root, out = run
    assert export_review(out, "labelstudio", root, tmp_path / "tasks.json") == 3
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == ["line/doubtful.png", "line/sure.png", "line/clean.png"]
    first = tasks[0]["predictions"][0]["result"][0]
    assert first["type"] == "polygonlabels" and first["value"]["polygonlabels"] == ["blowhole"] and first["score"] == 0.55
    assert first["value"]["points"][0] == pytest.approx([100 * 10 / 160, 100 * 10 / 120])


def test_coco_and_cvat_exports_hold_relative_paths_and_polygons(run, tmp_path):
    root, out = run
    export_review(out, "coco", root, tmp_path / "review.json")
    coco = json.loads((tmp_path / "review.json").read_text())
    assert [i["file_name"] for i in coco["images"]][0] == "line/doubtful.png" and len(coco["annotations"]) == 3
    assert isinstance(coco["annotations"][0]["segmentation"], list)
    export_review(out, "cvat", root, tmp_path / "review.xml")
    images = ElementTree.parse(tmp_path / "review.xml").getroot().findall("image")
    assert [i.get("name") for i in images][0] == "line/doubtful.png" and len(images[0].findall("polygon")) == 2
    with pytest.raises(DefectkitError, match="not under --root"):
        export_review(out, "coco", root / "line" / "elsewhere", tmp_path / "x.json")


def test_a_reviewed_export_reads_back_as_labels(run, tmp_path):
    root, out = run
    CliRunner().invoke(app, ["export-review", str(out), "--root", str(root), "-o", str(root / "tasks.json")])
    tasks = json.loads((root / "tasks.json").read_text())
    doubtful, sure, clean = tasks
    result = doubtful["predictions"][0]["result"]
    result[0]["value"]["polygonlabels"] = ["crack"]  # the reviewer renames one defect
    doubtful["annotations"] = [{"result": [result[0]]}]  # and deletes the other, a false defect
    clean["annotations"] = [{"result": []}]  # confirms a clean image
    # `sure` was never reviewed: it is left out
    (root / "tasks.json").write_text(json.dumps([doubtful, sure, clean]))
    samples = list(read_dataset(root / "tasks.json", "labelstudio"))
    assert [s.image_path.name for s in samples] == ["doubtful.png", "clean.png"]
    assert [s.defect_free for s in samples] == [False, True]
    image, annotations = samples[0].load()
    assert image.shape == (120, 160, 3) and [a.label for a in annotations] == ["crack"]
    assert annotations[0].mask[20, 20] and not annotations[0].mask[20, 50]


def test_priority_puts_clean_images_last():
    assert priority(record("a", [])) > priority(record("b", [0.99])) > priority(record("c", [0.5]))
