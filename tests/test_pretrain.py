import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from defectkit.embed import Embedder
from defectkit.errors import DefectkitError
from defectkit.jobs.pretrain import Augment, PretrainConfig, pretrain
from tests.conftest import make_defect_crops

pytestmark = pytest.mark.slow  # module fixtures train models

TINY = dict(backbone="resnet10t", image_size=32, batch_size=12, epochs=2, lr=1e-3)


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    return make_defect_crops(tmp_path_factory.mktemp("crops"), per_subtype=4, size=48)


@pytest.mark.parametrize("method", ["simclr", "supcon"])
def test_pretrain_saves_a_backbone_the_embedder_loads(crops, tmp_path, method):
    out = tmp_path / f"{method}.safetensors"
    summary = pretrain(crops, out, PretrainConfig(method=method, **TINY), progress=False)
    assert len(summary["loss_history"]) == 2 and all(np.isfinite(summary["loss_history"]))
    assert summary["final_loss"] > 0  # SupCon with class-balanced batches never collapses to 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["backbone"] == "resnet10t" and sidecar["image_size"] == 32 and sidecar["method"] == method
    assert sidecar["data"]["crops"] == 20
    assert not out.with_suffix(".state.pt").exists()
    embedder = Embedder(weights=out)  # name and size come from the JSON beside the weights
    assert embedder.backbone == "resnet10t" and embedder.image_size == 32
    state = load_file(str(out))
    assert all(torch.equal(state[k], v) for k, v in embedder.model.state_dict().items())


def test_an_interrupted_run_resumes_to_the_same_weights(crops, tmp_path, monkeypatch):
    config = PretrainConfig(method="supcon", **TINY)
    pretrain(crops, tmp_path / "whole.safetensors", config, progress=False)
    out = tmp_path / "resumed.safetensors"
    import defectkit.jobs.pretrain as job

    real_write = job.write_state

    def save_then_stop(path, state):
        real_write(path, state)
        raise KeyboardInterrupt  # the machine goes down right after epoch 1 was saved

    monkeypatch.setattr(job, "write_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pretrain(crops, out, config, progress=False)
    monkeypatch.setattr(job, "write_state", real_write)
    assert out.with_suffix(".state.pt").is_file() and not out.exists()
    summary = pretrain(crops, out, config, progress=False)
    assert len(summary["loss_history"]) == 2
    whole, resumed = load_file(str(tmp_path / "whole.safetensors")), load_file(str(out))
    assert all(torch.allclose(whole[k].float(), resumed[k].float(), atol=1e-5) for k in whole)
    random_init = Embedder("resnet10t", weights="random", image_size=32).model.state_dict()
    conv = next(k for k in whole if k.endswith("conv1.0.weight"))
    assert not torch.allclose(whole[conv], random_init[conv])
    # a state left by a run with other settings is refused, not silently mixed in
    torch.save({"config": "other", "epoch": 1}, out.with_suffix(".state.pt"))
    with pytest.raises(DefectkitError, match="other settings"):
        pretrain(crops, out, PretrainConfig(method="simclr", **TINY), progress=False)


def test_pretrain_on_a_folder_of_images_never_samples_the_held_out_ones(tmp_path, monkeypatch):
    """Whole unlabelled images (masks beside them are not images), patches at their own resolution;
    the images of an excluded crop data set (a split's test part) are never read."""
    from defectkit.data.manifest import write_manifest
    from defectkit.data.patches import sample_patches
    from tests.conftest import textured, write

    folder = tmp_path / "line"
    for i in range(6):
        image = textured(100, 140, seed=i)
        image[:, :, :] = np.clip(image.astype(int) + 10 * i, 0, 255).astype(np.uint8)  # each image its own brightness
        write(folder / f"part{i}.jpg", image)
        write(folder / f"part{i}.png", np.zeros((100, 140), np.uint8))  # a mask beside it
    write(folder / "small.jpg", textured(20, 30, seed=9))  # smaller than a patch: scaled up
    (folder / "broken.jpg").write_bytes(b"not an image")
    held_out = [{"image": str(folder / f"part{i}.jpg"), "crop_path": f"c{i}.png", "subtype": "blowhole"} for i in (4, 5)]
    write_manifest(tmp_path / "test" / "manifest.jsonl", held_out)

    out = tmp_path / "line.safetensors"
    config = PretrainConfig(**{**TINY, "batch_size": 8}, patch_size=48, patches_per_image=3)
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = pretrain(folder, out, config, progress=False, exclude=[tmp_path / "test"])
    assert summary["data"] == {"dataset": str(folder), "kind": "image patches", "crops": 15, "images": 5, "excluded_images": 2,
                               "patch_size": 48, "max_patch_size": 0}
    assert Embedder(weights=out).backbone == "resnet10t"
    import defectkit.data.patches as patches

    read, real_read = [], patches.read_image
    monkeypatch.setattr(patches, "read_image", lambda path: read.append(path.name) or real_read(path))
    with pytest.warns(UserWarning):
        found, sources = sample_patches(patches.image_files(folder, patches.held_out_images([tmp_path / "test"])), 48, 3)
    assert sorted(set(read)) == ["broken.jpg", "part0.jpg", "part1.jpg", "part2.jpg", "part3.jpg", "small.jpg"]
    assert all(p.shape == (48, 48, 3) for p in found) and {s.name for s in sources} == set(read) - {"broken.jpg"}
    (tmp_path / "held-out.txt").write_text("# the test part\nline/part4.jpg\n" + str(folder / "part5.jpg") + "\n")
    assert patches.held_out_images([tmp_path / "held-out.txt"]) == patches.held_out_images([tmp_path / "test"])
    with pytest.raises(DefectkitError, match="--method simclr"):
        pretrain(folder, out, PretrainConfig(**{**TINY, "method": "supcon"}), progress=False)


def test_augment_keeps_crop_and_mask_aligned():
    crop = np.zeros((48, 48, 3), np.uint8)
    mask = np.zeros((48, 48), bool)
    crop[10:20, 30:40] = 255
    mask[10:20, 30:40] = True
    torch.manual_seed(0)
    augment = Augment(32)
    for _ in range(5):
        view, region = augment(crop, mask)
        assert view.shape == (32, 32, 3) and region.shape == (32, 32)
        if region.any():
            assert view[region].mean() > view[~region].mean() + 60


def test_bad_settings_are_clear(crops, tmp_path):
    with pytest.raises(DefectkitError, match="method"):
        PretrainConfig(method="byol")
    with pytest.raises(DefectkitError, match="safetensors"):
        pretrain(crops, tmp_path / "x.pt", PretrainConfig(**TINY), progress=False)
    with pytest.raises(DefectkitError, match="fewer than one batch"):
        pretrain(crops, tmp_path / "x.safetensors", PretrainConfig(**{**TINY, "batch_size": 32}), progress=False)


def test_cli_defaults_match_the_config():
    import inspect

    from defectkit.cli import pretrain as command

    defaults = {name: p.default.default for name, p in inspect.signature(command).parameters.items() if hasattr(p.default, "default")}
    config = PretrainConfig()
    for name in ("backbone", "method", "epochs", "batch_size", "image_size", "mask_mode", "init", "lr", "seed", "patch_size",
                 "patches_per_image", "max_patch_size"):
        assert defaults[name] == getattr(config, name), name


def test_patches_of_several_scales_are_windows_of_several_sides_shrunk_to_one_size(tmp_path):
    """A horizontal ramp (value = column): a window of side s spans s - 1 grey levels, and keeps
    about that span when shrunk; fixed-size patches all span exactly the patch side."""
    from defectkit.data.patches import sample_patches
    from tests.conftest import write

    ramp = np.tile(np.arange(256, dtype=np.uint8), (200, 1))
    write(tmp_path / "ramp.png", np.dstack([ramp] * 3))
    spans = lambda patches: [int(p[..., 0].max()) - int(p[..., 0].min()) for p in patches]  # noqa: E731
    fixed, _ = sample_patches([tmp_path / "ramp.png"], 32, 20, seed=1)
    assert set(spans(fixed)) == {31}
    scaled, _ = sample_patches([tmp_path / "ramp.png"], 32, 40, seed=1, max_size=160)
    assert all(p.shape == (32, 32, 3) for p in scaled)
    assert max(spans(scaled)) > 80 and min(spans(scaled)) >= 29 and max(spans(scaled)) <= 160
    with pytest.raises(DefectkitError, match="largest size"):
        sample_patches([tmp_path / "ramp.png"], 32, 2, max_size=20)


def test_a_time_budget_ends_pretraining_before_its_epochs(crops, tmp_path):
    summary = pretrain(crops, tmp_path / "b.safetensors", PretrainConfig(**{**TINY, "epochs": 10_000, "max_minutes": 0.05}), progress=False)
    assert summary["epochs"] < 10_000 and summary["minutes"] < 0.2
    assert (tmp_path / "b.safetensors").is_file()
