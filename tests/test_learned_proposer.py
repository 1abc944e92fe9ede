"""The learned proposer: training on generated images, the bundle, inference, and bad input."""

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import textured, write
from defectkit.errors import DefectkitError

pytestmark = pytest.mark.slow

TAXONOMY_YAML = """name: painted
categories:
  marks: [spot]
aliases:
  spot: spot
  clean: background
"""


def painted(seed: int, size: int = 96, spots: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A noisy gray surface with ``spots`` dark discs, and their mask."""
    rng = np.random.default_rng(seed)
    image = textured(size, size, seed=seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(spots):
        centre = tuple(int(v) for v in rng.integers(16, size - 16, size=2))
        cv2.circle(mask, centre, int(rng.integers(5, 9)), 1, -1)
    image[mask > 0] = 60
    return image, mask


def make_mask_set(root: Path, defect: int = 16, clean: int = 6) -> Path:
    for i in range(defect):
        image, mask = painted(i)
        write(root / "spot" / f"s{i}.png", image)
        write(root / "spot" / f"s{i}_mask.png", mask * 255)
    for i in range(clean):
        write(root / "clean" / f"c{i}.png", textured(96, 96, seed=1000 + i))
    return root


@pytest.fixture(scope="module")
def taxonomy_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tax") / "painted.yaml"
    path.write_text(TAXONOMY_YAML)
    return path


@pytest.fixture(scope="module")
def config():
    from defectkit.segmenter.config import TrainProposerConfig

    return TrainProposerConfig(image_size=64, batch_size=8, epochs=12, steps_per_epoch=10, eval_every=4, patience=10,
                               tile=96, overlap=32, lr=3e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, taxonomy_file, config):
    """One proposer trained on 16 painted images (and 6 clean ones), shared by the tests below."""
    import torch

    from defectkit.jobs.train_proposer import train_proposer
    from defectkit.taxonomy import Taxonomy

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("learned")
    data = make_mask_set(root / "data")
    result = train_proposer(data, "masks", Taxonomy.load(taxonomy_file), root / "proposer", config, device="cpu", progress=False)
    return result


def test_training_lowers_the_loss_and_writes_a_bundle(trained):
    history = trained.bundle.joinpath("proposer.json").read_text()
    losses = [row["loss"] for row in json.loads(history)["training"]["history"]]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    assert not Path(f"{trained.bundle}.train-state.pt").exists()  # removed once the bundle is written
    assert trained.data == {"images": 22, "defect_images": 16, "regions": 16, "box_labelled": 0, "skipped": 0}


def test_painted_defect_is_found_and_clean_surface_left_alone(trained):
    from defectkit.matching import iou_matrix
    from defectkit.propose import create_proposer

    proposer = create_proposer("learned", model=trained.bundle)
    found = 0
    for seed in range(500, 506):  # images the network never saw
        image, mask = painted(seed)
        masks = proposer.propose(image)
        found += bool(masks) and iou_matrix([mask > 0], masks).max() >= 0.3
    assert found >= 5
    clean = sum(len(proposer.propose(textured(96, 96, seed=s))) for s in range(2000, 2004))
    assert clean <= 1


def test_bundle_round_trips_with_the_same_probabilities(trained, tmp_path):
    from defectkit.segmenter.bundle import load_proposer, save_proposer
    from defectkit.segmenter.inference import probability_map

    first = load_proposer(trained.bundle)
    copy = save_proposer(tmp_path / "copy", first.network, first.spec, first.post, first.tile, first.overlap)
    second = load_proposer(copy)
    image, _ = painted(7)
    assert np.array_equal(probability_map(first.network, image), probability_map(second.network, image))
    assert second.post == first.post and second.spec == first.spec


def test_tampered_or_padded_bundle_is_refused(trained, tmp_path):
    import shutil

    from defectkit.segmenter.bundle import load_proposer

    bad = tmp_path / "bad"
    shutil.copytree(trained.bundle, bad)
    weights = bad / "network.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DefectkitError, match="sha256"):
        load_proposer(bad)
    shutil.rmtree(bad)
    shutil.copytree(trained.bundle, bad)
    (bad / "extra.pkl").write_bytes(b"x")
    with pytest.raises(DefectkitError, match="not in the bundle's manifest"):
        load_proposer(bad)


def test_bundle_for_another_network_is_refused(trained, tmp_path):
    import shutil

    from defectkit.bundle_files import sha256_file
    from defectkit.segmenter.bundle import load_proposer

    other = tmp_path / "other"
    shutil.copytree(trained.bundle, other)
    manifest = json.loads((other / "proposer.json").read_text())
    manifest["network"]["encoder"] = "resnet18"
    manifest["files"]["network.safetensors"] = sha256_file(other / "network.safetensors")
    (other / "proposer.json").write_text(json.dumps(manifest))
    (other / "proposer.sha256").write_text(sha256_file(other / "proposer.json"))  # forged as one who knows the format would
    with pytest.raises(DefectkitError, match="do not fit"):
        load_proposer(other)


def test_tiled_inference_equals_whole_image_inference(trained):
    from defectkit.segmenter.bundle import load_proposer
    from defectkit.segmenter.inference import probability_map

    bundle = load_proposer(trained.bundle)
    image = np.concatenate([np.concatenate([painted(s)[0] for s in (1, 2, 3)], axis=1) for _ in range(2)], axis=0)  # 192 x 288
    whole = probability_map(bundle.network, image, tile=512)
    tiled = probability_map(bundle.network, image, tile=128, overlap=64)
    assert tiled.shape == whole.shape == image.shape[:2]
    assert np.abs(tiled - whole).mean() < 0.02
    assert ((tiled > 0.5) == (whole > 0.5)).mean() > 0.99


def test_classifier_bundle_carries_its_proposer_and_auto_uses_it(trained, tmp_path):
    from conftest import make_defect_crops
    from defectkit.classifier import ClassifierConfig
    from defectkit.pipeline import DefectClassifier
    from defectkit.taxonomy import Taxonomy
    from defectkit.jobs.train import train

    crops = make_defect_crops(tmp_path / "crops", per_subtype=6)
    taxonomy = Taxonomy.load(Path(__file__).resolve().parents[1] / "configs" / "taxonomy" / "magnetic-tile.yaml")
    model = train(crops, taxonomy, tmp_path / "model", ClassifierConfig(weights="random", image_size=32), cv=0, progress=False,
                  proposer=trained.bundle).bundle
    assert (model / "proposer" / "proposer.json").is_file()
    clf = DefectClassifier.load(model)
    described = clf.proposer.describe()
    assert described["name"] == "auto" and described["chose"]["name"] == "learned"
    assert "learned proposer" in described["because"]
    image, mask = painted(600)
    result = clf.classify(image)
    assert result.proposals >= 1
    from typer.testing import CliRunner

    from defectkit.cli import app

    write(tmp_path / "in" / "a.png", image)
    run = CliRunner().invoke(app, ["classify", str(tmp_path / "in"), "--model", str(model), "--out", str(tmp_path / "out"), "-q"])
    assert run.exit_code == 0, run.output
    assert "proposer: auto chose learned: learned proposer" in run.output
    # the carried proposer is checked: a changed manifest is refused
    manifest = model / "proposer" / "proposer.json"
    manifest.write_text(manifest.read_text().replace('"min_area"', '"min_area" ', 1))
    with pytest.raises(DefectkitError, match="proposer was modified"):
        DefectClassifier.load(model)


def test_segment_command_with_learned_proposer(trained, tmp_path):
    from typer.testing import CliRunner

    from defectkit.cli import app

    image, _ = painted(700)
    write(tmp_path / "in" / "a.png", image)
    result = CliRunner().invoke(app, ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--proposer", "learned",
                                      "--proposer-model", str(trained.bundle), "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "a.json").read_text())
    assert record["proposer"]["name"] == "learned"
    assert len(record["defects"]) >= 1
    missing = CliRunner().invoke(app, ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--proposer", "learned"])
    assert missing.exit_code == 2 and "--proposer-model" in missing.output


def test_boxes_become_weak_masks(tmp_path, taxonomy_file):
    from defectkit.segmenter.data import load_seg_data
    from defectkit.taxonomy import Taxonomy

    root = tmp_path / "yolo"
    root.mkdir()
    (root / "data.yaml").write_text("names: [spot]\n")
    write(root / "images" / "a.png", textured(100, 200))
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")  # a 40 x 40 box at the centre
    write(root / "images" / "b.png", textured(100, 200, seed=2))
    (root / "labels" / "b.txt").write_text("")  # defect-free
    write(root / "images" / "c.png", textured(100, 200, seed=3))
    (root / "labels" / "c.txt").write_text("0 1.8 0.5 0.2 0.4\n")  # outside the image
    taxonomy = Taxonomy.load(taxonomy_file)
    ellipse = load_seg_data(root, "yolo", taxonomy, box_fill="ellipse", progress=False)
    box = load_seg_data(root, "yolo", taxonomy, box_fill="box", progress=False)
    assert [Path(p).name for p, _ in ellipse.skipped] == ["c.txt"] and "outside" in ellipse.skipped[0][1]
    a = next(i for i in ellipse.images if i.path.name == "a.png")
    a_box = next(i for i in box.images if i.path.name == "a.png")
    assert a.boxes and (a.regions[0].w, a.regions[0].h) == (40, 40)
    assert a_box.target.sum() == 1600
    assert 0.7 * 1600 < a.target.sum() < 0.85 * 1600  # pi / 4 of the box
    assert not next(i for i in ellipse.images if i.path.name == "b.png").target.any()


def test_too_few_defect_images_is_a_clear_error(tmp_path, taxonomy_file, config):
    from defectkit.jobs.train_proposer import train_proposer
    from defectkit.taxonomy import Taxonomy

    data = make_mask_set(tmp_path / "data", defect=3, clean=2)
    with pytest.raises(DefectkitError, match="found 3 image.*at least 8"):
        train_proposer(data, "masks", Taxonomy.load(taxonomy_file), tmp_path / "p", config, progress=False)


def test_bad_files_are_named_and_skipped(tmp_path, taxonomy_file):
    from defectkit.segmenter.data import load_seg_data
    from defectkit.taxonomy import Taxonomy

    data = make_mask_set(tmp_path / "data", defect=2, clean=1)
    write(data / "spot" / "wrong.png", textured(96, 96))
    write(data / "spot" / "wrong_mask.png", np.zeros((50, 50), np.uint8))  # another size
    write(data / "spot" / "empty.png", textured(96, 96))
    write(data / "spot" / "empty_mask.png", np.zeros((96, 96), np.uint8))
    (data / "spot" / "broken.png").write_bytes(b"not an image")
    loaded = load_seg_data(data, "masks", Taxonomy.load(taxonomy_file), progress=False)
    skipped = {Path(p).name: reason for p, reason in loaded.skipped}
    assert "wrong_mask.png" in skipped and "50x50" in skipped["wrong_mask.png"]
    assert any(name.startswith("broken") for name in skipped)
    assert [Path(p).name for p, _ in loaded.warnings] == ["empty.png"]
    assert len(loaded.images) == 3


def test_backbone_weights_initialise_the_encoder(tmp_path):
    import torch

    from defectkit.segmenter.config import NetworkSpec
    from defectkit.segmenter.network import build_network, init_encoder

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "defectkit-backbone.safetensors"
    spec = NetworkSpec(encoder="mobilenetv3_small_100")  # the shipped backbone's architecture
    network = build_network(spec)
    init_encoder(network, spec, shipped)
    from safetensors.torch import load_file

    state = load_file(str(shipped))
    first = next(k for k in network.encoder.model.state_dict() if k.endswith("weight"))
    assert torch.equal(network.encoder.model.state_dict()[first], state[first])
    other = replace(spec, encoder="resnet18")
    with pytest.raises(DefectkitError, match="do not fit encoder 'resnet18'"):
        init_encoder(build_network(other), other, shipped)


def test_hub_weights_initialise_the_encoder_where_the_machine_is_online(monkeypatch):
    """No download here: timm's hub is stood in for by a model with known weights, and an offline
    machine gets a clear error."""
    import timm
    import torch

    from defectkit.segmenter.config import NetworkSpec
    from defectkit.segmenter.network import build_network, init_encoder

    real_create = timm.create_model
    asked = []

    def hub(name, pretrained=False, **kwargs):
        asked.append((name, pretrained))
        model = real_create(name, pretrained=False, **kwargs)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(0.125)  # "downloaded" weights
        return model

    spec = NetworkSpec()
    network = build_network(spec)
    monkeypatch.setattr(timm, "create_model", hub)
    init_encoder(network, spec, "hub")
    assert asked == [(spec.encoder, True)]
    first = next(k for k, v in network.encoder.model.state_dict().items() if k.endswith("weight"))
    assert torch.all(network.encoder.model.state_dict()[first] == 0.125)

    def offline(name, pretrained=False, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    fresh = build_network(spec)
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(DefectkitError, match="without internet use --encoder-weights imagenet"):
        init_encoder(fresh, spec, "hub")


def test_resume_continues_where_a_run_stopped(tmp_path, taxonomy_file, config, monkeypatch):
    import defectkit.segmenter.sampling as sampling
    import defectkit.segmenter.train as training
    from defectkit.segmenter.data import load_seg_data, split_seg_data
    from defectkit.taxonomy import Taxonomy

    data = load_seg_data(make_mask_set(tmp_path / "data", defect=10, clean=2), "masks", Taxonomy.load(taxonomy_file), progress=False)
    train, val = split_seg_data(data.images, 0.2, 0)
    short = replace(config, epochs=4, steps_per_epoch=3, eval_every=1)
    whole = training.train_network(train, val, short, None, "cpu", progress=False)

    calls = {"n": 0}
    sample = sampling.sample_batch

    def crash_in_epoch_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return sample(*args, **kwargs)

    state = tmp_path / "state.pt"
    monkeypatch.setattr(sampling, "sample_batch", crash_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        training.train_network(train, val, short, state, "cpu", progress=False)
    monkeypatch.setattr(sampling, "sample_batch", sample)
    with pytest.raises(DefectkitError, match="other settings"):
        training.train_network(train, val, replace(short, lr=1.0), state, "cpu", progress=False)
    resumed = training.train_network(train, val, short, state, "cpu", progress=False)
    assert [round(r["loss"], 5) for r in resumed.history] == [round(r["loss"], 5) for r in whole.history]
    assert resumed.post == whole.post


@pytest.mark.sam2
def test_sam2_refines_the_learned_regions(trained):
    """hybrid over learned: each learned region becomes one SAM2 prompt (the real tiny model with
    random weights, so a disagreeing answer falls back to the learned region itself)."""
    from defectkit.propose import build_proposer

    with pytest.warns(UserWarning, match="RANDOM"):
        hybrid = build_proposer("hybrid", proposer_model=str(trained.bundle), options={"random_weights": True, "device": "cpu"})
    assert hybrid.describe()["source"]["name"] == "learned"
    image, mask = painted(800)
    learned = hybrid.source.propose(image)
    refined = hybrid.propose(image)
    assert len(refined) == len(learned) >= 1
    assert hybrid.refined + hybrid.kept == len(learned)


def test_union_gives_every_members_regions(trained):
    from defectkit.propose import build_proposer, create_proposer

    union = build_proposer("union", proposer_model=str(trained.bundle))
    image, _ = painted(900, spots=2)
    learned = create_proposer("learned", model=trained.bundle).propose(image)
    classical = create_proposer("classical").propose(image)
    together = union.propose(image)
    assert len(together) == len(learned) + len(classical)
    assert all((a == b).all() for a, b in zip(together, learned + classical))
    assert [m["name"] for m in union.describe()["members"]] == ["learned", "classical"]


def test_an_unrelated_folder_is_never_replaced(tmp_path):
    from defectkit.segmenter.bundle import save_proposer
    from defectkit.segmenter.config import NetworkSpec
    from defectkit.segmenter.inference import Postprocess
    from defectkit.segmenter.network import build_network

    app = tmp_path / "webapp"
    app.mkdir()
    (app / "proposer.json").write_text('{"name": "my web app"}')
    (app / "index.html").write_text("<html></html>")
    network = build_network(NetworkSpec())
    with pytest.raises(DefectkitError, match="is not a proposer bundle.*nothing was overwritten"):
        save_proposer(app, network, NetworkSpec(), Postprocess(), 512, 64)
    assert sorted(p.name for p in app.iterdir()) == ["index.html", "proposer.json"]
    first = save_proposer(tmp_path / "p", network, NetworkSpec(), Postprocess(), 512, 64)
    again = save_proposer(first, network, NetworkSpec(), Postprocess(0.3), 512, 64)  # a bundle is replaced whole
    assert json.loads((again / "proposer.json").read_text())["postprocess"]["threshold"] == 0.3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "webapp"]  # no staging or old copies left


def test_a_time_budget_ends_training_at_its_low_rate_on_a_validated_state(tmp_path, taxonomy_file, config):
    from defectkit.segmenter.data import load_seg_data, split_seg_data
    from defectkit.segmenter.train import train_network
    from defectkit.taxonomy import Taxonomy

    data = load_seg_data(make_mask_set(tmp_path / "data", defect=10, clean=2), "masks", Taxonomy.load(taxonomy_file), progress=False)
    train, val = split_seg_data(data.images, 0.2, 0)
    budget = replace(config, epochs=1000, steps_per_epoch=5, eval_every=3, max_minutes=0.15)  # 5,000 steps would take many minutes
    trained = train_network(train, val, budget, None, "cpu", progress=False)
    assert trained.metrics["steps"] < 1000 * 5
    assert trained.metrics["minutes"] < 0.3
    last = trained.history[-1]
    assert "val_region_f1" in last  # the last state is validated, whatever epoch it ended in
    assert last["lr"] <= 0.05 * budget.lr


def test_auto_runs_the_proposer_the_training_crops_were_extracted_with(trained):
    from defectkit.propose import create_proposer

    chose = lambda **kw: create_proposer("auto", learned=str(trained.bundle), **kw).describe()["chose"]  # noqa: E731
    assert chose()["name"] == "learned"
    assert chose(trained_with="learned")["name"] == "learned"
    union = chose(trained_with="union")
    assert union["name"] == "union" and [m["name"] for m in union["members"]] == ["learned", "classical"]
    assert chose(trained_with="classical")["name"] == "classical"
    assert create_proposer("auto", trained_with="union").describe()["chose"]["name"] == "classical"  # no learned proposer
