"""`defectkit train` and `defectkit evaluate` end to end on generated crops, and their bad-input paths."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defectkit.cli import app
from defectkit.errors import DefectkitError
from defectkit.jobs.evaluate import grouped_folds
from tests.conftest import TAXONOMY, make_defect_crops

pytestmark = pytest.mark.slow  # module fixtures train models

BACKBONE = ["--backbone", "resnet10t", "--backbone-weights", "random", "--image-size", "32", "--pca", "8", "--no-cache", "-q"]
runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_defect_crops(root / "train", per_subtype=6, seed=0), make_defect_crops(root / "test", per_subtype=6, seed=1), root


@pytest.fixture(scope="module")
def trained(data):
    train_dir, _, root = data
    result = run("train", train_dir, "--taxonomy", TAXONOMY, "--out", root / "model", "--cv", 2, "--target-precision", 0.9, *BACKBONE)
    assert result.exit_code == 0, result.output
    return root / "model", result.output


def test_train_prints_cross_validated_figures_and_writes_a_bundle(trained):
    model, output = trained
    assert "2-fold CV grouped by source image" in output and "hierarchy" in output and "fray" in output
    assert "RANDOM" in output  # random backbone weights are never silent
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["metrics"]["cv"]["k"] == 2 and 0 <= manifest["metrics"]["subtype"]["macro_f1"] <= 1
    assert "expected calibration error" in output and 0 <= manifest["metrics"]["calibration"]["ece"] <= 1
    thresholds = manifest["thresholds"]
    assert thresholds["target_precision"] == 0.9 and "2-fold" in thresholds["chosen_on"]
    assert set(thresholds["per_class"]) <= {"blowhole", "uneven", "crack", "fray"}
    assert all(t is None or 0 <= t <= 1 for t in thresholds["per_class"].values())
    # no --texture/--no-texture: the grouped CV chose the feature set, and the bundle holds what it chose
    choice = manifest["training"]["feature_choice"]
    scores = choice["cv_macro_f1"]
    assert set(scores) == {"geometry+texture", "geometry+embedding", "geometry+texture+embedding"}
    assert choice["chosen"] == max(scores, key=scores.get) and f"features: {choice['chosen']}" in output
    features = manifest["features"]
    assert (features["texture"], features["embedding"]) == ("texture" in choice["chosen"], "embedding" in choice["chosen"])
    assert (model / "backbone.safetensors").exists() == features["embedding"]  # no backbone where no embedding was chosen
    assert choice["folds"] == 2 and manifest["metrics"]["cv"]["subtype_macro_f1_per_fold"] and round(
        sum(manifest["metrics"]["cv"]["subtype_macro_f1_per_fold"]) / 2, 4) == scores[choice["chosen"]]


def test_evaluate_a_bundle_on_held_out_crops(trained, data, tmp_path):
    _, test_dir, _ = data
    result = run("evaluate", test_dir, "--model", trained[0], "--report", tmp_path / "report.json", "--plots", tmp_path / "plots",
                 "--html", tmp_path / "html", "-q", "--no-cache")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n"] == 30
    assert set(report["category"]) >= {"accuracy", "macro_f1"}
    assert set(report["subtype"]) >= {"accuracy", "macro_f1", "per_class"}
    assert set(report["subtype"]["per_class"]["crack"]) == {"precision", "recall", "f1", "support"}
    assert report["subtype"]["per_class"]["crack"]["support"] == 6
    assert report["category"]["accuracy"] > 0.6 and report["subtype"]["accuracy"] > 0.5  # chance: 1/3 and 1/5
    matrix = np.array(report["confusion"]["subtype"]["matrix"])
    assert matrix.sum() == 30 and np.trace(matrix) == round(report["subtype"]["accuracy"] * 30)
    for name in ("category_confusion.png", "subtype_confusion.png"):
        image = cv2.imread(str(tmp_path / "plots" / name))
        assert image is not None and image.shape[0] > 100
    predictions = report["predictions"]  # every crop: which were wrong, and how sure the model was
    assert len(predictions) == 30 and sum(p["true"] == p["predicted"] for p in predictions) == np.trace(matrix)
    html = (tmp_path / "html" / "report.html").read_text()
    assert f'<td id="macro-f1">{report["subtype"]["macro_f1"]:.3f}</td>' in html
    assert f'<td id="ece">{report["calibration"]["ece"]:.3f}</td>' in html
    wrong = 30 - int(np.trace(matrix))
    assert html.count('class="mistake"') == min(wrong, 48) and len(list((tmp_path / "html" / "mistakes").iterdir())) == min(wrong, 48)
    assert cv2.imread(str(tmp_path / "html" / "reliability.png")) is not None


def test_cross_validation_with_baselines_on_the_same_folds(data, tmp_path):
    train_dir, _, _ = data
    # 6 crops from 3 images per subtype: 5 grouped folds cannot be made, 3 can
    features = ["--no-embedding", "--texture", "--no-cache", "-q"]  # the embedding path is covered by `train` above
    result = run("evaluate", train_dir, "--taxonomy", TAXONOMY, "--cv", 5, "--baselines", "--report", tmp_path / "cv.json", *features)
    assert result.exit_code == 0, result.output
    assert "using 3 folds instead of 5" in result.output
    for name in ("xgb", "knn", "logreg", "flat stack", "hierarchy"):
        assert name in result.output
    report = json.loads((tmp_path / "cv.json").read_text())
    assert report["cv"]["k"] == 3 and len(report["cv"]["subtype_macro_f1_per_fold"]) == 3
    assert set(report["baselines"]) == {"xgb", "knn", "logreg", "flat stack"}
    assert all(b["n"] == report["n"] == 30 for b in report["baselines"].values())
    assert report["category"]["accuracy"] > 0.6


def test_grouped_folds_never_put_an_image_on_both_sides():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 60, 400).astype(str)
    subtypes = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 400)]
    folds = grouped_folds(subtypes, groups, 5, seed=0)
    assert len(folds) == 5
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(400))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])


def test_too_few_images_of_a_class_means_fewer_folds_or_a_clear_error():
    subtypes = np.array(["a"] * 20 + ["b"] * 4)
    groups = np.array([f"a{i}" for i in range(20)] + ["b0", "b0", "b1", "b2"])
    with pytest.warns(UserWarning, match="using 3 folds instead of 5: subtype 'b' has crops from only 3 source images"):
        assert len(grouped_folds(subtypes, groups, 5)) == 3
    with pytest.raises(DefectkitError, match="'b' has crops from a single source image"):
        grouped_folds(subtypes, np.array([f"a{i}" for i in range(20)] + ["b0"] * 4), 5)


def test_bad_input_gives_clear_errors(data, trained, tmp_path):
    train_dir, _, _ = data
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.jsonl").write_text("")
    result = run("evaluate", empty, "--taxonomy", TAXONOMY, "--cv", 3, *BACKBONE)
    assert result.exit_code == 2 and "empty" in result.output

    lines = (train_dir / "manifest.jsonl").read_text().splitlines()
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    records = [json.loads(line) for line in lines]
    for record in records[:3]:
        record["subtype"] = "scratch"
    (unknown / "manifest.jsonl").write_text("".join(json.dumps({**r, "crop_path": str(train_dir / r["crop_path"]), "mask_path": str(train_dir / r["mask_path"])}) + "\n" for r in records))
    result = run("train", unknown, "--taxonomy", TAXONOMY, "--out", tmp_path / "m", *BACKBONE)
    assert result.exit_code == 2 and "'scratch' (3 crops)" in result.output and "magnetic-tile.yaml" in result.output

    (unknown / "manifest.jsonl").write_text(lines[0].replace("crops/", str(train_dir) + "/gone/") + "\n")
    result = run("evaluate", unknown, "--model", trained[0], "-q")
    assert result.exit_code == 2 and "missing on disk" in result.output

    result = run("evaluate", train_dir, "--model", trained[0], "--taxonomy", TAXONOMY, "--cv", 3)
    assert result.exit_code == 2 and "either --model" in result.output


def test_geometry_only_model_needs_no_backbone(data, tmp_path):
    train_dir, test_dir, _ = data
    result = run("train", train_dir, "--taxonomy", TAXONOMY, "--out", tmp_path / "geo", "--no-embedding", "--cv", 0, "-q", "--no-cache")
    assert result.exit_code == 0, result.output
    assert "RANDOM" not in result.output and not (tmp_path / "geo" / "backbone.safetensors").exists()
    manifest = json.loads((tmp_path / "geo" / "manifest.json").read_text())
    assert "feature_choice" not in manifest["training"] and manifest["features"]["texture"] is False  # no CV, no choice
    result = run("evaluate", test_dir, "--model", tmp_path / "geo", "--report", tmp_path / "geo.json", "-q", "--no-cache")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "geo.json").read_text())["subtype"]["accuracy"] > 0.5
