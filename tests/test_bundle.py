"""Model bundles: saved and reloaded they predict the same; tampered ones are refused; no pickle runs."""

import json
import pickle
import shutil

import numpy as np
import pytest

from defectkit.bundle import FORMAT_VERSION, MODEL_FILE, load_bundle, save_bundle
from defectkit.bundle_files import sha256_file
from defectkit.classifier import ClassifierConfig, decide
from defectkit.errors import DefectkitError
from defectkit.labelled import load_labelled
from defectkit.taxonomy import Taxonomy
from defectkit.jobs.train import train
from tests.conftest import TAXONOMY, make_defect_crops

pytestmark = pytest.mark.slow  # module fixtures train models

CONFIG = ClassifierConfig(backbone="resnet10t", weights="random", image_size=32, pca=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    crops = make_defect_crops(root / "crops", per_subtype=10)
    with pytest.warns(UserWarning, match="RANDOM"):
        result = train(crops, Taxonomy.load(TAXONOMY), root / "model", CONFIG, cv=0, progress=False)
    return crops, result.bundle, result.model


def forge(bundle, manifest: dict) -> None:
    """Rewrite a bundle's manifest as a tamperer who knows the format would: its digest too."""
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "manifest.sha256").write_text(sha256_file(bundle / "manifest.json"))


@pytest.fixture
def bundle_copy(trained, tmp_path):
    return shutil.copytree(trained[1], tmp_path / "model")


def test_reloaded_bundle_predicts_the_same(trained):
    crops_dir, bundle_dir, model = trained
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["backbone"]["name"] == "resnet10t" and len(manifest["backbone"]["weights_sha256"]) == 64
    assert set(manifest["files"]) == {"model.skops", "backbone.safetensors"}
    assert {"scikit-learn", "xgboost", "torch", "timm"} <= set(manifest["versions"])
    assert manifest["training"]["crops"] == 50 and manifest["training"]["per_subtype"]["fray"] == 10
    assert manifest["features"]["names"][:2] == ["log_area", "edges"]

    bundle = load_bundle(bundle_dir)
    crops = load_labelled(crops_dir, bundle.taxonomy)
    X = bundle.features(crops.records)
    with pytest.warns(UserWarning, match="RANDOM"):
        embedder = CONFIG.embedder()  # the same backbone built afresh embeds the same
    np.testing.assert_allclose(embedder.embed_records(crops.records), X[:, CONFIG.feature_spec().n_tabular :], atol=1e-5)
    before, after = decide(model, X), decide(bundle.model, X)  # as trained vs as loaded
    np.testing.assert_array_equal(before[0], after[0])  # categories
    np.testing.assert_array_equal(before[1], after[1])  # subtypes
    for expected, actual in zip(before[2:], after[2:]):  # confidence and both levels' probabilities
        np.testing.assert_allclose(expected, actual, rtol=1e-6, atol=1e-7)
    assert (decide(bundle.model, X)[1] == crops.subtypes).mean() > 0.8


def test_every_bundle_file_is_readable_as_the_umask_allows(trained):
    import stat

    from defectkit.images import UMASK

    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in trained[1].iterdir()}
    assert set(modes) >= {"model.skops", "backbone.safetensors", "manifest.json"}
    assert {name: mode for name, mode in modes.items() if mode != 0o666 & ~UMASK} == {}


def test_tampered_or_truncated_files_are_refused(bundle_copy):
    model = bundle_copy / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(DefectkitError, match=r"model\.skops: sha256 .* does not match the manifest"):
        load_bundle(bundle_copy)
    backbone = bundle_copy / "backbone.safetensors"
    backbone.write_bytes(backbone.read_bytes()[:100])
    with pytest.raises(DefectkitError, match="modified or truncated"):
        load_bundle(bundle_copy)
    (bundle_copy / "backbone.safetensors").unlink()
    with pytest.raises(DefectkitError, match="missing"):
        load_bundle(bundle_copy)


def test_newer_format_version_says_so(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    forge(bundle_copy, manifest)
    with pytest.raises(DefectkitError, match="newer defectkit.*Upgrade"):
        load_bundle(bundle_copy)
    with pytest.raises(DefectkitError, match="no model bundle"):
        load_bundle(bundle_copy / "nowhere")


def test_a_manifest_changed_by_one_byte_is_refused(bundle_copy):
    manifest = bundle_copy / "manifest.json"
    text = manifest.read_text()
    assert '"created": "20' in text
    manifest.write_text(text.replace('"created": "20', '"created": "21', 1))
    with pytest.raises(DefectkitError, match="manifest was modified"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.sha256").unlink()
    with pytest.raises(DefectkitError, match="manifest.sha256 is missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("change, expected", [
    (lambda m: m["model"].update(file="/etc/passwd"), "loads only its own model.skops"),
    (lambda m: m["backbone"].update(file="../backbone.safetensors"), "loads only its own backbone.safetensors"),
    (lambda m: m["backbone"].update(name="hf-hub:someone/model"), "not a model timm knows locally"),
    (lambda m: m.update(model=None), "malformed manifest"),
    (lambda m: m["taxonomy"].update(aliases=["x"]), "malformed manifest"),
    (lambda m: m.update(taxonomy={"name": "t", "categories": {"surface": ["blowhole", "uneven"]}}), "taxonomy does not list"),
])
def test_a_forged_manifest_loads_nothing_from_outside_and_nothing_inconsistent(bundle_copy, change, expected):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    change(manifest)
    forge(bundle_copy, manifest)
    with pytest.raises(DefectkitError, match=expected):
        load_bundle(bundle_copy).embedder()


class _Payload:
    sentinel = ""

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(_Payload.sentinel), "pwned"))


def test_a_pickle_placed_in_a_bundle_is_never_executed(bundle_copy, tmp_path):
    import hashlib

    _Payload.sentinel = str(tmp_path / "sentinel")
    evil = pickle.dumps(_Payload())
    # 1. beside the real files: refused as not part of the bundle, never opened
    (bundle_copy / "model.pkl").write_bytes(evil)
    with pytest.raises(DefectkitError, match="not in the bundle's manifest: model.pkl"):
        load_bundle(bundle_copy)
    (bundle_copy / "model.pkl").unlink()
    # 2. instead of the model, with the manifest's hash forged to match: still only read by skops
    (bundle_copy / MODEL_FILE).write_bytes(evil)
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"][MODEL_FILE] = hashlib.sha256(evil).hexdigest()
    forge(bundle_copy, manifest)
    with pytest.raises(DefectkitError, match="not a readable skops model"):
        load_bundle(bundle_copy)
    # 3. pointed to by a forged manifest as the backbone weights: read as safetensors only
    (bundle_copy / "backbone.safetensors").write_bytes(evil)
    manifest["files"]["backbone.safetensors"] = hashlib.sha256(evil).hexdigest()
    forge(bundle_copy, manifest)
    with pytest.raises(DefectkitError):
        load_bundle(bundle_copy)
    assert not (tmp_path / "sentinel").exists()


class Custom:
    """A type the bundle's trusted list does not know."""

    def predict(self, X):
        return X


def test_untrusted_types_are_neither_saved_nor_loaded(trained, bundle_copy):
    import hashlib

    import skops.io as sio

    bundle = load_bundle(trained[1])
    with pytest.raises(DefectkitError, match="types a bundle will not load: .*Custom"):
        save_bundle(bundle_copy.parent / "other", Custom(), bundle.taxonomy, bundle.spec, bundle.embedder())
    data = sio.dumps({"model": Custom()})
    (bundle_copy / MODEL_FILE).write_bytes(data)
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"][MODEL_FILE] = hashlib.sha256(data).hexdigest()
    forge(bundle_copy, manifest)
    with pytest.raises(DefectkitError, match="refused.*Custom"):
        load_bundle(bundle_copy)


def test_save_refuses_to_overwrite_a_folder_that_is_not_a_bundle(trained, tmp_path):
    bundle = load_bundle(trained[1])
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("years of work")
    with pytest.raises(DefectkitError, match="not a defectkit model bundle"):
        save_bundle(tmp_path / "precious", bundle.model, bundle.taxonomy, bundle.spec, bundle.embedder())
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "years of work"
