"""SAM2 fine-tuning with the real tiny SAM2 (random weights: no checkpoint can be downloaded here),
at a 256-pixel input so that a few steps on shipped sample images take seconds on a CPU."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defectkit.cli import app
from defectkit.errors import DefectkitError
from defectkit.geometry import Region
from defectkit.sam2_finetune import DataOptions, FinetuneOptions, evaluate, load_model, load_split, read_metadata, save_checkpoint
from defectkit.sam2_finetune.data import LabelledImage, Instance, box_prompt, center_point, sample_prompt, split_by_image, training_subset
from defectkit.sam2_finetune.evaluate import evaluate_checkpoints
from defectkit.sam2_finetune.model import build, decode, encode, image_predictor, to_model_frame
from defectkit.sam2_finetune.train import Trainer
from defectkit.taxonomy import Taxonomy
from tests.conftest import SAMPLE, TAXONOMY

pytestmark = [pytest.mark.slow, pytest.mark.sam2]  # the real tiny SAM2, random weights

CONFIG = "sam2.1_hiera_t"
SIZE = 256


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread is much faster than several on a shared, busy CPU; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> Path:
    """A random-weight tiny SAM2 saved in the stock layout: our stand-in for Meta's file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": build(CONFIG).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two blowhole and two crack images of the shipped sample, with their masks."""
    root = tmp_path_factory.mktemp("mt")
    for folder in ("MT_Blowhole", "MT_Crack"):
        for image in sorted((SAMPLE / folder / "Imgs").glob("*.jpg")):
            target = root / folder / "Imgs"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, target / image.name)
            shutil.copy(image.with_suffix(".png"), target / image.with_suffix(".png").name)
    return root


@pytest.fixture(scope="module")
def split(dataset):
    return load_split(dataset, DataOptions(taxonomy=Taxonomy.load(TAXONOMY), val_fraction=0.5))


@pytest.fixture(scope="module")
def model(base_checkpoint):
    return load_model(CONFIG, base_checkpoint, "cpu", SIZE)


def test_split_holds_out_whole_images_per_label(split):
    assert len(split.train) == 2 and len(split.heldout) == 2
    assert {i.label for i in split.heldout} == {"MT_Blowhole", "MT_Crack"}
    assert not {i.key for i in split.train} & {i.key for i in split.heldout}
    assert all(inst.subtype in ("blowhole", "crack") for i in split.train for inst in i.instances)


def _fake(n_per_label: int) -> list[LabelledImage]:
    region = Region(0, 0, np.ones((2, 2), bool))
    return [
        LabelledImage(Path(f"{label}/{i}.png"), f"{label}/{i}.png", label, (8, 8), [Instance(label, region)], load=lambda: None)
        for label in ("a", "b", "c") for i in range(n_per_label)
    ]


def test_split_is_seeded_and_training_subsets_are_nested():
    images = _fake(20)
    train, heldout = split_by_image(images, 0.2, seed=3)
    again = split_by_image(list(reversed(images)), 0.2, seed=3)
    assert [i.key for i in heldout] == [i.key for i in again[1]]
    assert len(heldout) == 12 and len(train) == 48
    assert [i.key for i in split_by_image(images, 0.2, seed=4)[1]] != [i.key for i in heldout]
    shares = [{i.key for i in training_subset(train, f, seed=0)} for f in (0.1, 0.25, 0.5, 1.0)]
    assert [len(s) for s in shares] == [6, 12, 24, 48]
    assert shares[0] <= shares[1] <= shares[2] <= shares[3]


def test_prompts_are_drawn_from_the_region():
    mask = np.ones((20, 10), bool)
    mask[:5, :5] = False  # tight box, but not every pixel of it is inside
    region = Region(50, 60, mask)
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(200):
        prompt = sample_prompt(region, (200, 300), rng)
        for (x, y), label in zip(prompt.coords, prompt.labels):
            inside = bool(region.full_mask((200, 300))[int(y), int(x)])
            if label == 1:
                assert inside
            elif label == 0:
                assert not inside
            else:
                assert 0 <= x < 300 and 0 <= y < 200
        if prompt.labels[0] == 2:
            assert np.abs(prompt.coords - box_prompt(region, (200, 300)).coords).max() <= 20
        kinds.add((prompt.labels[0] == 2, prompt.multimask, 0 in prompt.labels))
    assert (True, False, False) in kinds and (False, True, False) in kinds and (False, False, True) in kinds
    assert box_prompt(region, (200, 300)).coords.tolist() == [[50, 60], [59, 79]]
    x, y = center_point(region)
    assert region.full_mask((200, 300))[int(y), int(x)]


def test_training_forward_matches_the_stock_predictor(model, split):
    image = split.train[0]
    pixels = image.load()
    box = box_prompt(image.instances[0].region, image.shape)
    with torch.no_grad():
        features = encode(model, [pixels])[0]
        coords = torch.from_numpy(to_model_frame(box.coords, image.shape, SIZE))[None]
        logits, iou, _ = decode(model, features, coords, torch.tensor([[2, 3]], dtype=torch.int))
        predictor = image_predictor(model)
        predictor.set_image(pixels)
        _, stock_iou, stock_low_res = predictor.predict(box=box.coords.reshape(1, 4), multimask_output=True, return_logits=True)
    torch.testing.assert_close(torch.clamp(logits[0, 1:], -32, 32), torch.from_numpy(stock_low_res), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(iou[0, 1:], torch.from_numpy(stock_iou), atol=1e-5, rtol=1e-5)


def test_a_few_steps_lower_the_loss_and_leave_frozen_parts_alone(base_checkpoint, split):
    model = load_model(CONFIG, base_checkpoint, "cpu", SIZE)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, FinetuneOptions(epochs=4, lr=1e-3, batch_size=2), progress=False)
    assert trainer.trainable and all(n.startswith(("sam_prompt_encoder.", "sam_mask_decoder.")) for n in trainer.trainable)
    before = trainer.evaluate_loss(split.train, seed=0)["total"]
    history = trainer.fit(split.train, [])
    after = trainer.evaluate_loss(split.train, seed=0)["total"]
    assert after < 0.8 * before, (before, after, history)
    assert len(trainer.cache.items) == len(split.train)  # each image encoded once, then reused
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before_state[k])}
    assert changed and changed <= set(trainer.trainable)
    assert not any(k.startswith(("image_encoder.", "sam_mask_decoder.conv_s0", "sam_mask_decoder.conv_s1")) for k in changed)


def test_saved_checkpoint_loads_with_stock_build_sam2_and_answers_the_same(model, split, tmp_path):
    from sam2.build_sam import build_sam2

    path = save_checkpoint(model, tmp_path / "tuned.pt", {"note": "test"})
    reloaded = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=str(path), device="cpu",
                          hydra_overrides_extra=[f"++model.image_size={SIZE}"])
    build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=str(path), device="cpu")  # the default size loads too
    image = split.heldout[0]
    pixels = image.load()
    boxes = np.stack([box_prompt(i.region, image.shape).coords.reshape(4) for i in image.instances])
    answers = []
    for m in (model, reloaded):
        predictor = image_predictor(m)
        with torch.inference_mode():
            predictor.set_image(pixels)
            answers.append(predictor.predict(box=boxes, multimask_output=False, return_logits=True))
    for a, b in zip(*answers):
        np.testing.assert_array_equal(a, b)
    assert read_metadata(path) == {"note": "test"}


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(DefectkitError, match=r"not found: .*nope\.pt.*sam2\.1_hiera_tiny\.pt"):
        load_model(CONFIG, tmp_path / "nope.pt")
    result = CliRunner().invoke(app, ["finetune-sam2", str(SAMPLE), "--sam2-checkpoint", str(tmp_path / "nope.pt"),
                                      "--out", str(tmp_path / "x.pt"), "-q"])
    assert result.exit_code == 2
    assert "nope.pt" in result.output and "error" in result.output


def test_checkpoint_of_another_model_is_a_clear_error(base_checkpoint, tmp_path):
    with pytest.raises(DefectkitError, match=r"does not match SAM2 config sam2.1_hiera_s.*of another shape"):
        load_model("sam2.1_hiera_s", base_checkpoint)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DefectkitError, match="not a readable PyTorch checkpoint"):
        load_model(CONFIG, junk)
    with pytest.raises(DefectkitError, match="unknown SAM2 config"):
        load_model("sam3_hiera_t", base_checkpoint)


def test_evaluation_refuses_a_checkpoint_trained_on_held_out_images(model, split, dataset, tmp_path):
    leaky = save_checkpoint(model, tmp_path / "leaky.pt", {"train_images": [split.heldout[0].key], "seed": 0, "val_fraction": 0.5})
    data = DataOptions(taxonomy=Taxonomy.load(TAXONOMY), val_fraction=0.5)
    with pytest.raises(DefectkitError, match="trained on 1 of these held-out images"):
        evaluate_checkpoints(dataset, CONFIG, [leaky], data, SIZE, "cpu", None, progress=False)


def test_evaluation_summarises_per_subtype(model, split):
    result = evaluate(model, split.heldout, amg=None, progress=False)
    summary = result.summary()
    assert set(summary) == {"blowhole", "crack", "all"}
    assert summary["all"]["regions"] == split.regions[1]
    assert 0.0 <= summary["all"]["box_miou"] <= 1.0 and summary["all"]["amg_recall"] is None


def test_finetune_command_end_to_end_with_resume_evaluation_and_data_study(base_checkpoint, dataset, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ckpt" / "mt-tiny.pt"
    common = ["--sam2-config", CONFIG, "--image-size", str(SIZE), "--val-fraction", "0.5", "--taxonomy", str(TAXONOMY), "-q"]
    args = ["finetune-sam2", str(dataset), "--sam2-checkpoint", str(base_checkpoint), "--out", str(out),
            "--epochs", "1", "--batch-size", "2", "--lr", "1e-3", "--amg-points-per-side", "2", *common]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "base vs fine-tuned" in result.output and "fine-tuned" in result.output
    meta = read_metadata(out)
    assert meta["epoch"] == 1 and meta["image_size"] == SIZE and len(meta["train_images"]) == 2
    assert (tmp_path / "ckpt" / "mt-tiny.train-state.pt").is_file()

    result = runner.invoke(app, [*args, "--resume", "--epochs", "2", "--no-evaluate"])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta["epoch"] == 2 and [h["epoch"] for h in meta["history"]] == [1, 2]

    result = runner.invoke(app, [*args, "--resume", "--epochs", "3", "--lr", "0.5"])
    assert result.exit_code == 2 and "cannot resume" in result.output

    study = tmp_path / "study"
    result = runner.invoke(app, ["evaluate-sam2", str(dataset), "--sam2-checkpoint", str(base_checkpoint), "--compare", str(out),
                                 "--fractions", "1", "--epochs", "1", "--out-dir", str(study), "--amg-points-per-side", "2", *common])
    assert result.exit_code == 0, result.output
    assert "mt-tiny" in result.output and "sam2.1_hiera_tiny_random" in result.output
    assert (study / "fractions.png").read_bytes()[:4] == b"\x89PNG"
    lines = (study / "fractions.csv").read_text().strip().splitlines()
    assert len(lines) == 3 and lines[1].split(",")[1] == "base" and lines[2].split(",")[:2] == ["2", "100%"]
    assert read_metadata(study / "finetuned-100pct.pt")["fraction"] == 1.0
