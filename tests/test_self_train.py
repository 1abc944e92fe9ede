"""`train --unlabelled`: confident predictions on unlabelled images become training crops; the bars
come from the labelled crops only, and no other image is ever pseudo-labelled."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defectkit.cli import app
from defectkit.crops import CropSpec
from defectkit.data.manifest import read_manifest
from defectkit.jobs.extract import ExtractOptions, extract
from defectkit.pipeline import DefectClassifier
from defectkit.taxonomy import Taxonomy
from tests.conftest import TAXONOMY, image_set

pytestmark = pytest.mark.slow  # trains several models

BACKBONE = ["--backbone", "resnet10t", "--backbone-weights", "random", "--image-size", "32", "--pca", "8", "--no-cache", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("selftrain")
    crops = root / "crops"
    extract(image_set(root / "labelled", 6, 0), crops, Taxonomy.load(TAXONOMY),
            ExtractOptions(crop=CropSpec(size=48)), progress=False)
    line = image_set(root / "line", 8, 300)
    for mask in line.rglob("*.png"):
        mask.unlink()  # unlabelled: images only
    image_set(root / "test", 3, 900)  # held out: never given to train
    return root


@pytest.fixture(scope="module")
def self_trained(data):
    out = data / "model"
    result = CliRunner().invoke(app, ["train", str(data / "crops"), "-t", str(TAXONOMY), "-o", str(out), "--cv", "2",
                                      "--unlabelled", str(data / "line"), "--rounds", "2", "--pseudo-precision", "0.9", *BACKBONE])
    return out, result


def test_self_training_learns_from_confident_pseudo_labels_of_the_unlabelled_images_only(data, self_trained):
    out, result = self_trained
    assert result.exit_code == 0, result.output
    assert "self-training round 1:" in result.output and "self-training round 2:" in result.output
    record = json.loads((out / "manifest.json").read_text())["training"]["self_training"]
    assert record["unlabelled_images"] == 24 and [(r["round"], r["unreadable_images"]) for r in record["rounds"]] == [(1, 0), (2, 0)]
    assert 0 < record["labelled_cv"]["subtype_macro_f1"] <= 1 and record["target_precision"] == 0.9

    pseudo = [r for r in read_manifest(Path(str(out) + ".self-training") / "round-2") if r.get("origin") == "pseudo"]
    assert pseudo and sum(record["rounds"][-1]["pseudo_labels"].values()) == len(pseudo)
    line = (data / "line").resolve()
    assert all(Path(r["image"]).resolve().is_relative_to(line) for r in pseudo)  # never a labelled or test image
    bars = record["bars"]
    assert set(bars) == {"background", "blowhole", "crack"}
    assert all(bars[r["subtype"]] is not None and r["confidence"] >= bars[r["subtype"]] for r in pseudo)
    classifier = DefectClassifier.load(out, "classical")
    test_image = sorted((data / "test" / "MT_Blowhole").glob("*.jpg"))[0]
    assert classifier.classify(test_image).error is None
    # (how often the pseudo-labels are right is measured on real data: benchmarks/self_training.py)


def test_only_regions_that_clear_their_class_bar_become_pseudo_labels(data, self_trained, tmp_path):
    """A class without a bar (None: it never reached the precision) gets no pseudo-label at all."""
    from defectkit.jobs.self_train import pseudo_label

    model = Path(str(self_trained[0]) + ".self-training") / "round-0" / "model"
    images = sorted((data / "line").rglob("*.jpg"))
    everything, unreadable = pseudo_label(model, images + [tmp_path / "missing.jpg"], {"background": 0.0, "blowhole": 0.0, "crack": 0.0},
                                          tmp_path / "all", "classical", False)
    assert unreadable == 1  # counted and skipped; the others go on
    bars = {"background": 0.97, "blowhole": 0.0, "crack": None}
    kept, _ = pseudo_label(model, images, bars, tmp_path / "some", "classical", False)
    expected = [(r["image"], r["bbox"]) for r in everything
                if r["subtype"] != "crack" and r["confidence"] >= bars[r["subtype"]]]
    assert {r["subtype"] for r in everything} >= {"background", "crack"}  # the bars below have something to remove
    assert [(r["image"], r["bbox"]) for r in kept] == expected and len(kept) < len(everything)
    assert all((tmp_path / "some" / r["crop_path"]).is_file() and (tmp_path / "some" / r["mask_path"]).is_file() for r in kept)
    # capped per class (the class balance of the labelled crops): the most confident of each class
    capped, _ = pseudo_label(model, images, {"background": 0.0, "blowhole": 0.0, "crack": 0.0}, tmp_path / "capped", "classical", False,
                             caps={"background": 2, "blowhole": 100, "crack": 0})
    background = sorted((r["confidence"] for r in everything if r["subtype"] == "background"), reverse=True)
    assert sorted(r["confidence"] for r in capped if r["subtype"] == "background") == sorted(background[:2])
    assert not [r for r in capped if r["subtype"] == "crack"]
    key = lambda rows: [(r["image"], r["bbox"], r["confidence"]) for r in rows if r["subtype"] == "blowhole"]  # noqa: E731
    assert key(capped) == key(everything)  # under its cap: every one, in the order found


def test_self_training_input_errors_are_clear(data, tmp_path):
    args = ["train", str(data / "crops"), "-t", str(TAXONOMY), "-o", str(tmp_path / "m"), *BACKBONE]
    no_cv = CliRunner().invoke(app, [*args, "--cv", "0", "--unlabelled", str(data / "line")])
    assert no_cv.exit_code == 2 and "--unlabelled needs --cv 2 or more" in no_cv.output
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, [*args, "--cv", "2", "--unlabelled", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no images found" in empty.output
