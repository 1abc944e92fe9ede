"""The Embedder: timm backbones by name, weights from files (never unpickled), and the embedding cache."""

import json
import pickle

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from defectkit.data.manifest import read_manifest
from defectkit.embed import Embedder, EmbeddingCache, RandomWeightsWarning
from defectkit.errors import DefectkitError
from tests.conftest import make_defect_crops

pytestmark = pytest.mark.slow  # module fixtures train models

TINY = dict(backbone="resnet10t", image_size=32)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return read_manifest(make_defect_crops(tmp_path_factory.mktemp("crops"), per_subtype=4))


@pytest.fixture(scope="module")
def embedder():
    with pytest.warns(RandomWeightsWarning):
        return Embedder(weights="random", **TINY)


def test_random_weights_warn_and_are_seeded(embedder, records):
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        again = Embedder(weights="random", **TINY)
    with pytest.warns(RandomWeightsWarning):
        other = Embedder(weights="random", seed=1, **TINY)
    vectors = embedder.embed_records(records[:6])
    assert vectors.shape == (6, embedder.dim) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    assert again.weights_sha256 == embedder.weights_sha256 != other.weights_sha256
    np.testing.assert_allclose(again.embed_records(records[:6]), vectors, rtol=1e-5, atol=1e-6)


def test_weights_from_safetensors_and_state_dict_files(embedder, records, tmp_path):
    state = {k: v.clone() for k, v in embedder.model.state_dict().items()}
    save_file(state, str(tmp_path / "backbone.safetensors"))
    (tmp_path / "backbone.json").write_text(json.dumps({"backbone": "resnet10t", "image_size": 32, "mask_mode": "dim"}))
    loaded = Embedder(weights=tmp_path / "backbone.safetensors")  # name, size and mask mode from the JSON
    assert (loaded.backbone, loaded.image_size, loaded.mask_mode) == ("resnet10t", 32, "dim")
    assert loaded.weights_sha256 == embedder.weights_sha256
    # a training checkpoint: {"state_dict": ...} with a classifier head the embedder does not need
    torch.save({"state_dict": {**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}}, tmp_path / "ckpt.pth")
    from_torch = Embedder(weights=tmp_path / "ckpt.pth", **TINY)
    assert from_torch.weights_sha256 == embedder.weights_sha256
    np.testing.assert_allclose(from_torch.embed_records(records[:4]), embedder.embed_records(records[:4]), rtol=1e-5, atol=1e-6)


def test_missing_or_mismatched_weights_name_file_and_model(embedder, tmp_path):
    with pytest.raises(DefectkitError, match=r"not found: .*nothing\.safetensors.*resnet10t"):
        Embedder(weights=tmp_path / "nothing.safetensors", **TINY)
    save_file({k: v.clone() for k, v in embedder.model.state_dict().items()}, str(tmp_path / "r10.safetensors"))
    with pytest.raises(DefectkitError, match=r"r10\.safetensors: weights do not fit backbone 'mobilenetv3_small_050'"):
        Embedder("mobilenetv3_small_050", weights=tmp_path / "r10.safetensors", image_size=32)
    with pytest.raises(DefectkitError, match="unknown backbone 'no_such_net'"):
        Embedder("no_such_net", weights="random")
    with pytest.raises(DefectkitError, match="mask_mode"):
        Embedder(weights="random", mask_mode="alpha", **TINY)


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(_Payload.sentinel), "pwned"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickled_weights_file_is_never_executed(tmp_path):
    _Payload.sentinel = str(tmp_path / "sentinel")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.0.weight": _Payload()}))
    with pytest.raises(DefectkitError, match=r"evil\.pth: cannot read backbone weights"):
        Embedder(weights=tmp_path / "evil.pth", **TINY)
    assert not (tmp_path / "sentinel").exists()


def test_mask_modes_change_what_the_backbone_sees(embedder):
    crop = np.full((48, 48, 3), 120, np.uint8)
    mask = np.zeros((48, 48), bool)
    mask[10:20, 10:20] = True
    plain = embedder.prepare(crop, mask)
    with pytest.warns(RandomWeightsWarning):
        channel = Embedder(weights="random", mask_mode="channel", **TINY).prepare(crop, mask)
    with pytest.warns(RandomWeightsWarning):
        dim = Embedder(weights="random", mask_mode="dim", **TINY).prepare(crop, mask)
    assert plain.shape == channel.shape == dim.shape == (3, 32, 32)
    assert np.ptp(plain[2]) == 0 and np.ptp(channel[2]) > 0  # the mask is the third channel
    assert dim[0, 30, 30] < plain[0, 30, 30] and dim[0, 9, 9] == pytest.approx(plain[0, 9, 9])


def test_prepare_gives_exactly_the_normalised_resized_crop(embedder):
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    mask = rng.random((48, 48)) > 0.7
    resized = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    region = cv2.resize(mask.astype(np.uint8), (32, 32), interpolation=cv2.INTER_NEAREST).astype(np.float32) * 255.0
    gray = resized.mean(axis=2)
    with pytest.warns(RandomWeightsWarning):
        channel = Embedder(weights="random", mask_mode="channel", **TINY)
    for model, image in ((embedder, resized), (channel, np.stack([gray, gray, region], axis=2))):
        want = ((image - model.mean) / model.std).transpose(2, 0, 1)
        np.testing.assert_array_equal(model.prepare(crop, mask), want)  # the same float32 values, bit for bit


def test_cache_embeds_each_crop_once_per_backbone(embedder, records, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "cache")
    first = embedder.embed_records(records, cache)
    shards = list((tmp_path / "cache").rglob("shard-*.npz"))
    assert len(shards) == 1
    with np.load(shards[0], allow_pickle=False) as data:  # plain arrays, no pickle
        assert data["vectors"].shape == first.shape
    calls = []
    monkeypatch.setattr(embedder, "_forward", lambda batch: calls.append(len(batch)) or np.zeros((len(batch), embedder.dim), np.float32))
    np.testing.assert_array_equal(embedder.embed_records(records, cache), first)
    assert calls == []  # nothing embedded again
    changed = dict(records[0])
    changed["crop_path"] = str(tmp_path / "changed.png")
    image = (np.random.default_rng(1).random((48, 48, 3)) * 255).astype(np.uint8)
    import cv2

    cv2.imwrite(changed["crop_path"], image)
    embedder.embed_records([changed, *records[1:]], cache)
    assert calls == [1]  # only the crop whose bytes changed
    with pytest.warns(RandomWeightsWarning):
        bigger = Embedder(weights="random", backbone="resnet10t", image_size=40)
    assert EmbeddingCache(tmp_path / "cache").folder(bigger.identity) != cache.folder(embedder.identity)


def test_the_shipped_default_backbone_is_used_without_a_warning(recwarn):
    from defectkit.embed import DEFAULT_WEIGHTS
    from defectkit.embed.backbone import sidecar

    assert DEFAULT_WEIGHTS.is_file(), "checkpoints/defectkit-backbone.safetensors is shipped with the repo"
    embedder = Embedder()  # weights="default"
    assert not [w for w in recwarn if issubclass(w.category, RandomWeightsWarning)]
    hints = sidecar(DEFAULT_WEIGHTS)
    assert embedder.source.kind == "file" and embedder.backbone == hints["backbone"]
    assert (embedder.image_size, embedder.mask_mode) == (hints["image_size"], hints["mask_mode"])
    crop = (np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)
    mask = np.zeros((80, 80), bool)
    mask[30:50, 20:60] = True
    vector = embedder.embed([crop], [mask])
    assert vector.shape == (1, embedder.dim) and np.isfinite(vector).all()


def test_batches_prepared_on_a_worker_give_the_vectors_of_one_batch_at_a_time(embedder, records, monkeypatch):
    from defectkit.images import read_image, read_mask

    crops = [read_image(r["crop_path"]) for r in records]
    masks = [read_mask(r["mask_path"]) > 0 for r in records]
    whole = embedder.embed(crops, masks)  # one batch of all
    monkeypatch.setattr(embedder, "batch_size", 3)
    sizes = []
    forward = embedder._forward
    monkeypatch.setattr(embedder, "_forward", lambda batch: sizes.append(len(batch)) or forward(batch))
    np.testing.assert_allclose(embedder.embed(crops, masks), whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_records(records), whole, rtol=1e-5, atol=1e-5)
    assert len(records) > 6 and sizes == 2 * ([3] * (len(records) // 3) + ([len(records) % 3] if len(records) % 3 else []))
