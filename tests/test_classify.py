"""`DefectClassifier` and `defectkit classify` on generated inspection images with known defects."""

import copy
from pathlib import Path
import json
import subprocess
import sys
import time
import types

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from defectkit.classifier import ClassifierConfig
from defectkit.jobs.classify import ClassifyOptions, classify_images
from defectkit.cli import app
from defectkit.crops import CropSpec
from defectkit.data.manifest import read_manifest
from defectkit.jobs.extract import ExtractOptions, extract
from defectkit.errors import DefectkitError
from defectkit.geometry import connected_regions
from defectkit.images import read_image
from defectkit.pipeline import DefectClassifier, Result
from defectkit.propose import create_proposer
from defectkit.taxonomy import Taxonomy
from defectkit.timing import Timings
from defectkit.jobs.train import train
from tests.conftest import TAXONOMY, image_set, textured, write

pytestmark = pytest.mark.slow  # module fixtures train models


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained once for this module, with the timings and result of its training."""
    root = tmp_path_factory.mktemp("classify")
    extract(image_set(root / "train", 10, 0), root / "crops", Taxonomy.load(TAXONOMY), ExtractOptions(crop=CropSpec(size=48)), progress=False)
    config = ClassifierConfig(backbone="resnet10t", weights="random", image_size=32, pca=8)
    timings = Timings()
    with pytest.warns(UserWarning, match="RANDOM"):
        result = train(root / "crops", Taxonomy.load(TAXONOMY), root / "model", config, cv=0, progress=False, timings=timings)
    return types.SimpleNamespace(bundle=root / "model", test=image_set(root / "test", 3, 100), timings=timings, result=result)


@pytest.fixture(scope="module")
def model(trained):
    return trained.bundle, trained.test


def test_train_records_the_time_of_each_step(trained):
    assert list(trained.timings.seconds) == ["features", "cv", "fit", "save"]
    assert all(trained.timings.calls[step] == 1 for step in trained.timings.seconds)
    assert 0 < trained.timings.total <= trained.result.seconds  # each step counted once, inside the run


def test_classify_records_the_time_of_each_stage(model, tmp_path):
    bundle, test = model
    classifier = DefectClassifier.load(bundle, create_proposer("given"))
    paths = sorted((test / "MT_Blowhole").glob("*.jpg")) + sorted((test / "MT_Crack").glob("*.jpg"))
    timings = Timings()
    start = time.perf_counter()
    options = ClassifyOptions(chunk_size=4, workers=0)  # on this thread only: stage seconds add up to at most the wall time
    report, _ = classify_images(paths, tmp_path / "out", classifier, options, progress=False, timings=timings)
    wall = time.perf_counter() - start
    assert list(timings.seconds) == ["read", "propose", "polygonize", "crop", "embed", "classify", "write"]
    assert timings.calls["read"] == timings.calls["propose"] == timings.calls["write"] == report.done == len(paths) == 6
    assert timings.calls["embed"] == timings.calls["classify"] == 2  # one pass per chunk of 4 images
    assert 0 < timings.total <= wall  # on one thread no stage is counted twice
    assert sum(timings.shares().values()) == pytest.approx(1)
    again = Timings()
    classifier.classify(paths[0], timings=again)  # a path: the classifier reads it
    assert again.calls["read"] == 1 and again.total > 0


def test_stream_in_chunks_with_a_worker_gives_the_results_of_one_image_at_a_time(model, tmp_path):
    bundle, test = model
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths = sorted((test / "MT_Blowhole").glob("*.jpg")) + sorted((test / "MT_Crack").glob("*.jpg"))
    paths.insert(3, broken)
    classifier = DefectClassifier.load(bundle, create_proposer("given"), keep_background=True)
    alone = [classifier.classify(path) if path != broken else None for path in paths]
    streamed = list(classifier.stream(paths, chunk_size=4, workers=1))
    assert [path for path, _, _ in streamed] == paths
    for (path, image, result), expected in zip(streamed, alone):
        if expected is None:
            assert image is None and isinstance(result, Exception)
            continue
        assert image.shape == (120, 160, 3) and result.image == str(path)
        assert [(d.subtype, d.area) for d in result.defects] == [(d.subtype, d.area) for d in expected.defects]
        assert [d.confidence for d in result.defects] == pytest.approx([d.confidence for d in expected.defects], abs=1e-5)


def test_a_region_that_breaks_its_chunk_fails_only_its_own_image(model, monkeypatch):
    bundle, test = model
    paths = sorted((test / "MT_Crack").glob("*.jpg"))
    classifier = DefectClassifier.load(bundle, create_proposer("given"))
    bad = str(paths[1])
    classify_regions = classifier._classify_regions

    def fussy(images, timings):
        if any(regions.path == bad for regions in images):
            raise ValueError("a region the backbone cannot take")
        classify_regions(images, timings)

    monkeypatch.setattr(classifier, "_classify_regions", fussy)
    results = list(classifier.classify_batch(paths, chunk_size=8))
    assert [r.error is not None for r in results] == [False, True, False]
    assert "a region the backbone cannot take" in results[1].error
    assert all(r.defects for r in results if r.error is None)


def test_classify_names_the_defects_on_new_images(model):
    bundle, test = model
    classifier = DefectClassifier.load(bundle, create_proposer("given"))
    assert classifier.crop == CropSpec(size=48)  # crops are cut as the training crops were
    right = total = 0
    for kind, label in (("blowhole", "MT_Blowhole"), ("crack", "MT_Crack")):
        for path in sorted((test / label).glob("*.jpg")):
            result = classifier.classify(path)
            assert isinstance(result, Result) and result.image == str(path) and result.size == (160, 120)
            for d in result.defects:
                assert d.category in ("surface", "structural", "uncertain")
                assert 0 <= d.confidence <= 1
                assert sum(d.scores["subtype"].values()) == pytest.approx(1, abs=1e-3)
                assert sum(d.scores["category"].values()) == pytest.approx(1, abs=1e-3)
            right += sum(d.subtype == kind for d in result.defects)
            total += 1
    assert right >= total - 1, f"{right} of {total} defects named right"


def test_background_is_dropped_unless_kept(model):
    bundle, test = model
    free = sorted((test / "MT_Free").glob("*.jpg"))[0]
    patch = np.pad(np.ones((20, 30), bool), ((50, 50), (60, 70)))  # a patch of plain surface
    fake = types.SimpleNamespace(propose=lambda image, image_path=None: [patch], describe=lambda: {"name": "fake"})
    kept = DefectClassifier.load(bundle, fake, keep_background=True).classify(free)
    dropped = DefectClassifier.load(bundle, fake).classify(free)
    assert kept.proposals == dropped.proposals == 1 and len(kept.defects) == 1
    assert kept.defects[0].category == "background"  # plain surface, as the background crops it learned from
    assert dropped.defects == []


def test_min_confidence_marks_doubtful_defects_uncertain(model):
    bundle, test = model
    path = sorted((test / "MT_Crack").glob("*.jpg"))[0]
    result = DefectClassifier.load(bundle, create_proposer("given"), min_confidence=1.0).classify(path)
    assert result.defects and all(d.subtype == "uncertain" and d.category == "uncertain" for d in result.defects)


def test_train_chooses_a_defect_threshold_that_classify_applies(tmp_path):
    """With the proposer's hard negatives in the crops, train's grouped CV picks the P(not background)
    below which classify drops a region; classify takes it from the bundle, or as asked."""
    taxonomy = Taxonomy.load(TAXONOMY)
    extract(image_set(tmp_path / "train", 6, 0), tmp_path / "crops", taxonomy,
            ExtractOptions(crop=CropSpec(size=48), negatives_from="classical"), progress=False)
    config = ClassifierConfig(backbone="resnet10t", weights="random", image_size=32, pca=8)
    with pytest.warns(UserWarning, match="RANDOM"):
        result = train(tmp_path / "crops", taxonomy, tmp_path / "model", config, cv=2, progress=False, max_false_alarms=0.0)
    chosen = json.loads((tmp_path / "model" / "manifest.json").read_text())["thresholds"]["defect"]
    assert chosen["target_false_alarms_per_image"] == 0.0 and "2-fold" in chosen["chosen_on"]
    origin = np.array([r["origin"] for r in read_manifest(tmp_path / "crops")])  # in the order train read them
    assert (origin == "negative").any()
    kept = (origin == "negative") & (result.cv.predicted != "background") & (1 - result.cv.background >= chosen["threshold"])
    assert chosen["false_alarms_per_image"][1] == kept.sum() == 0
    assert DefectClassifier.load(tmp_path / "model", create_proposer("classical")).defect_threshold == chosen["threshold"]

    image = sorted((tmp_path / "train" / "MT_Crack").glob("*.jpg"))[0]
    found = DefectClassifier.load(tmp_path / "model", create_proposer("given"), defect_threshold=0.0, keep_background=True).classify(image)
    assert any(d.category != "background" for d in found.defects)
    dropped = DefectClassifier.load(tmp_path / "model", create_proposer("given"), defect_threshold=1.0, keep_background=True).classify(image)
    assert len(dropped.defects) == len(found.defects) and all(d.category == d.subtype == "background" for d in dropped.defects)
    assert [d.confidence for d in dropped.defects] == [d.scores["subtype"]["background"] for d in dropped.defects]
    with pytest.raises(DefectkitError, match="between 0 and 1"):
        DefectClassifier.load(tmp_path / "model", create_proposer("given"), defect_threshold=1.5)


def test_train_prints_the_defect_threshold_and_warns_when_it_costs_most_finds(capsys):
    from defectkit.cli import _print_defect_threshold

    chosen = {"threshold": 0.89, "target_false_alarms_per_image": 0.05, "false_alarms_per_image": [0.45, 0.045],
              "matched_called_defect": [0.48, 0.04]}
    _print_defect_threshold(chosen)
    out, err = capsys.readouterr()
    assert "P(not background) >= 0.89" in out and "0.45 -> 0.045" in out and "48% -> 4%" in out
    assert err.startswith("warning") and "keeps only 4% of the defects it finds (48% without" in err
    _print_defect_threshold({**chosen, "matched_called_defect": [0.8, 0.7]})
    out, err = capsys.readouterr()
    assert "80% -> 70%" in out and err == ""
    _print_defect_threshold({**chosen, "threshold": 0.0, "false_alarms_per_image": [0.02, 0.02], "matched_called_defect": [0.9, 0.9]})
    assert capsys.readouterr().out.startswith("defect threshold: none needed (out-of-fold, false defects per defect-free image 0.02 -> 0.02")


def test_thresholds_per_subtype_leave_the_other_subtypes_alone(model):
    bundle, test = model
    pore, crack = sorted((test / "MT_Blowhole").glob("*.jpg"))[0], sorted((test / "MT_Crack").glob("*.jpg"))[0]
    strict = DefectClassifier.load(bundle, create_proposer("given"), min_confidence={"blowhole": 1.0})
    assert {d.subtype for d in strict.classify(pore).defects} == {"uncertain"}
    assert "uncertain" not in {d.subtype for d in strict.classify(crack).defects}
    with pytest.raises(DefectkitError, match="not a subtype of the model"):
        DefectClassifier.load(bundle, create_proposer("given"), min_confidence={"pore": 0.5})


def test_a_thresholds_file_sets_them_per_subtype_and_the_command_line_wins(model, tmp_path):
    from defectkit.cli import confidence_thresholds

    bundle, test = model
    file = tmp_path / "thresholds.yaml"
    file.write_text('"*": 0.3\nblowhole: 1.0\ncrack: 0.4\n')
    assert confidence_thresholds(file, None, []) == {"*": 0.3, "blowhole": 1.0, "crack": 0.4}
    assert confidence_thresholds(file, 0.5, ["crack=0.9"]) == {"*": 0.5, "blowhole": 1.0, "crack": 0.9}
    for bad in ("crack: high\n", "- crack\n", "crack: 0.4\ncrack: 0.5\n"):
        file.write_text(bad)
        with pytest.raises(DefectkitError, match="thresholds"):
            confidence_thresholds(file, None, [])
    file.write_text("blowhole: 1.0\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["classify", str(test / "MT_Blowhole"), "-m", str(bundle), "-o", str(out), "-p", "given",
                                      "--thresholds", str(file), "--overlays", "none", "-q"])
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "coco.json"]
    assert records and {d["subtype"] for r in records for d in r["defects"]} == {"uncertain"}


def test_classify_batch_streams_and_reports_bad_images(model, tmp_path):
    bundle, test = model
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    classifier = DefectClassifier.load(bundle, create_proposer("given"))
    stream = classifier.classify_batch([broken, *sorted((test / "MT_Crack").glob("*.jpg"))])
    assert iter(stream) is stream  # a generator: one image at a time
    first = next(stream)
    assert first.error and "broken.jpg" in first.error and first.defects == []
    assert all(r.error is None and r.defects for r in stream)


def test_cli_classify_writes_results_and_goes_on_after_a_bad_image(model, tmp_path):
    bundle, test = model
    images = tmp_path / "images"
    for path in sorted(test.rglob("*.jpg"))[:4]:
        write(images / path.name, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    (images / "corrupt.jpg").write_bytes(b"\x00\x01")
    out = tmp_path / "out"
    args = ["classify", str(images), "--model", str(bundle), "--out", str(out), "--proposer", "classical", "--coco", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "proposer: classical" in result.output and "4 image(s) classified" in result.output
    assert "warning: the model was trained without hard negatives" in result.output  # extracted without them
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["image"].endswith("corrupt.jpg") for e in errors] == [True]
    record = json.loads((out / f"{sorted(images.glob('*.jpg'))[1].stem}.json").read_text())
    assert {"image", "size", "proposer", "model", "defects"} <= set(record)
    assert (out / "summary.csv").read_text().startswith("image,id,category,subtype,confidence,area,edges")
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == 4 and {c["name"] for c in coco.loadCats(coco.getCatIds())} >= {"blowhole", "crack"}
    overlay = cv2.imread(str(out / f"{sorted(images.glob('*.jpg'))[1].stem}.png"))
    assert overlay.shape == (120, 160, 3)
    (images / "corrupt.jpg").unlink()
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0 and "4 kept from before" in again.output


def test_classify_killed_at_random_points_20_times_ends_as_one_uninterrupted_run(model, tmp_path):
    """kill -9 at random moments (after a random number of files written, plus a random delay),
    then --resume: every JSON, overlay, CSV row and COCO entry equals those of a run never killed."""
    bundle, test = model
    images = tmp_path / "images"
    for n in range(24):  # enough images that 20 kills of at most a few files each never finish the run
        for path in sorted(test.rglob("*.jpg")):
            write(images / f"{n}_{path.name}", cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    args = ["--model", str(bundle), "--proposer", "classical", "--coco", "-q", "--resume"]
    command = lambda out: [sys.executable, "-m", "defectkit", "classify", str(images), "--out", str(out), *args]  # noqa: E731
    whole, out = tmp_path / "whole", tmp_path / "out"
    subprocess.run(command(whole), check=True, capture_output=True)
    written = lambda: len(list(out.glob("*"))) if out.is_dir() else 0  # noqa: E731
    rng = np.random.default_rng(0)
    kills = 0
    while kills < 20:
        process = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        goal = written() + int(rng.integers(1, 4))
        while process.poll() is None and written() < goal:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        if process.poll() is not None:
            break  # the run ended before its kill: nothing left to interrupt
        process.kill()
        process.wait()
        kills += 1
    assert kills == 20, f"the runs ended after {kills} kills: give them more images"
    subprocess.run(command(out), check=True, capture_output=True)

    def files(folder):
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".defectkit.lock"}

    assert files(out).keys() == files(whole).keys()
    assert files(out) == files(whole)


def test_the_review_loop_feeds_a_correction_back_into_the_model(model, tmp_path):
    """classify, export for review, a reviewer renames one defect and deletes a false one, the review
    comes back through extract as labels (the renamed region under its new subtype, the deleted one
    as a background crop), and the model retrained on it moves its prediction of those two regions
    the reviewer's way, against a model trained on the same review accepted as it was."""
    from defectkit.data.manifest import read_manifest

    bundle, _ = model
    test = image_set(tmp_path / "line", 8, 200)  # a day's images of the line: 8 pores, 8 cracks, 8 clean
    run = tmp_path / "run"
    runner = CliRunner()
    # the given proposer (the masks beside the images) stands in for a good one: it proposes every defect
    assert runner.invoke(app, ["classify", str(test / "MT_Blowhole"), str(test / "MT_Crack"), "-m", str(bundle), "-o", str(run),
                               "-p", "given", "-q"]).exit_code == 0
    tasks_file = test / "review.json"
    assert runner.invoke(app, ["export-review", str(run), "--root", str(test), "-o", str(tasks_file)]).exit_code == 0
    tasks = json.loads(tasks_file.read_text())
    for task in tasks:  # the reviewer accepts every prediction...
        task["annotations"] = [{"result": copy.deepcopy(task["predictions"][0]["result"])}]
    accepted = copy.deepcopy(tasks)
    pore = next(t for t in tasks if "MT_Blowhole" in t["data"]["image"] and t["annotations"][0]["result"])
    predicted = pore["annotations"][0]["result"][0]["value"]["polygonlabels"][0]
    renamed = "crack" if predicted != "crack" else "blowhole"  # ...but names this region otherwise than the model did
    pore["annotations"][0]["result"][0]["value"]["polygonlabels"] = [renamed]
    extra = next(t for t in tasks if "MT_Crack" in t["data"]["image"] and t["annotations"][0]["result"])
    extra["annotations"][0]["result"].pop()  # ...and that this crack is no defect at all

    def retrain(review: list, name: str):
        review_file, crops = test / f"{name}.json", tmp_path / f"{name}-crops"  # beside the images, as --root says
        review_file.write_text(json.dumps(review))
        result = runner.invoke(app, ["extract", str(review_file), str(crops), "-f", "labelstudio", "-t", str(TAXONOMY),
                                     "--negatives-from", "given", "--crop-size", "48", "-q"])
        assert result.exit_code == 0, result.output
        with pytest.warns(UserWarning, match="RANDOM"):
            train(crops, Taxonomy.load(TAXONOMY), tmp_path / name, ClassifierConfig(backbone="resnet10t", weights="random", image_size=32, pca=8),
                  cv=0, progress=False)
        return crops, DefectClassifier.load(tmp_path / name, create_proposer("given"), keep_background=True)

    crops, corrected = retrain(tasks, "corrected")
    by_image = {}
    for record in read_manifest(crops):
        by_image.setdefault(Path(record["image"]).name, []).append((record["subtype"], record["origin"]))
    # the reviewer's region, and the proposer's outline of it (a matched proposal), both under the new name
    assert by_image[Path(pore["data"]["image"]).name] == [(renamed, "annotation"), (renamed, "proposal")]
    deleted = by_image[Path(extra["data"]["image"]).name]
    assert ("background", "negative") in deleted and not [s for s, _ in deleted if s != "background"]
    _, as_before = retrain(accepted, "accepted")

    def score(classifier, task, subtype):
        (defect,) = classifier.classify(test / task["data"]["image"]).defects  # each test image holds one region
        return defect.scores["subtype"].get(subtype, 0.0)  # a model that never saw the subtype gives it 0

    assert score(corrected, pore, renamed) > score(as_before, pore, renamed)
    assert score(corrected, extra, "background") > score(as_before, extra, "background")


def test_missing_model_is_a_clear_error(tmp_path):
    write(tmp_path / "images" / "a.png", textured())
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "images"), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nope" in result.output


@pytest.mark.sam2
def test_classify_with_sam2_end_to_end(model):
    """The SAM2 path (the real tiny model, random weights: no checkpoint can be downloaded here)
    runs through classify: masks come back, are polygonized, cropped, embedded and classified."""
    bundle, test = model
    with pytest.warns(UserWarning, match="random"):
        proposer = create_proposer("sam2", random_weights=True, mode="automatic", points_per_side=4,
                                   pred_iou_thresh=0.0, stability_score_thresh=0.0, max_fraction=1.0)
    classifier = DefectClassifier.load(bundle, proposer, keep_background=True)
    path = sorted((test / "MT_Blowhole").glob("*.jpg"))[0]
    result = classifier.classify(path)
    assert result.proposer["name"] == "sam2" and result.size == (160, 120)
    assert result.proposals == len(result.defects) > 0
    # every defect is one connected region of one of SAM2's masks, measured and classified as such
    image = read_image(path)
    regions = [r for m in proposer.propose(image) for r in connected_regions(m, 10)]
    assert sorted(d.area for d in result.defects) == sorted(r.area for r in regions)
    again = [copy.copy(d) for d in result.defects]
    classifier.classify_defects(image, again)
    for d, twin in zip(result.defects, again):
        assert (twin.subtype, twin.category) == (d.subtype, d.category)


def test_classify_batch_takes_one_path_and_reports_items_that_are_no_path(model):
    bundle, test = model
    classifier = DefectClassifier.load(bundle, create_proposer("given"))
    path = sorted((test / "MT_Crack").glob("*.jpg"))[0]
    alone = list(classifier.classify_batch(str(path)))  # a bare string is one path
    assert len(alone) == 1 and alone[0].error is None and alone[0].defects
    results = list(classifier.classify_batch([path, None, np.zeros((4, 4, 5), np.uint8), path]))
    assert [r.error is None for r in results] == [True, False, False, True]
    assert "expected an image path or array, got NoneType" in results[1].error and "(4, 4, 5)" in results[2].error


def test_arrays_gray_rgb_and_bgr_classify_as_the_file_does(model):
    bundle, test = model
    classifier = DefectClassifier.load(bundle, create_proposer("classical"))
    path = sorted((test / "MT_Blowhole").glob("*.jpg"))[0]
    rgb = read_image(path)
    expected = classifier.classify(path)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    as_bgr = classifier.classify(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True)
    batch = list(classifier.classify_batch([rgb, gray]))
    for result in (as_bgr, *batch):
        assert result.error is None
        assert [(d.subtype, d.area) for d in result.defects] == [(d.subtype, d.area) for d in expected.defects]
    assert batch[0].image == "<array 0>" and batch[0].to_dict()["width"] == rgb.shape[1] == batch[0].width
    assert batch[0].to_dict()["height"] == rgb.shape[0] and batch[0].to_dict()["error"] is None


def test_result_masks_are_the_defects_regions_at_full_size(model):
    bundle, test = model
    path = sorted((test / "MT_Blowhole").glob("*.jpg"))[0]
    result = DefectClassifier.load(bundle, create_proposer("given")).classify(path)
    masks = result.masks()
    truth = read_image(path.with_suffix(".png"))[:, :, 0] > 127
    assert len(masks) == len(result.defects) == 1
    assert masks[0].shape == (result.height, result.width) and masks[0].sum() == result.defects[0].area
    assert (masks[0] & truth).sum() == truth.sum()  # the given proposer proposes the mask beside the image
