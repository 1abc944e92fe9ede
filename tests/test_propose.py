"""Proposers: the registry and its plugins, the classical proposer on generated defects, and the
real SAM2 code paths (tiny model with random weights: shapes, batching, tiling, errors)."""

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectkit.errors import DefectkitError
from defectkit.geometry import defects_from_mask
from defectkit.propose import Prompts, build_proposer, create_proposer, proposer_names
from defectkit.registry import Registry

from tests.conftest import SAMPLE


def surface(height=256, width=256, seed=0) -> np.ndarray:
    """A ground surface: vertical grinding streaks, a brightness band across it, noise (RGB uint8)."""
    rng = np.random.default_rng(seed)
    streaks = cv2.GaussianBlur(rng.normal(0, 12, (1, width)).astype(np.float32), (0, 0), 1.0)
    band = 25 * np.sin(np.linspace(0, np.pi, width, dtype=np.float32))
    gray = 130 + band[None, :] + streaks + rng.normal(0, 4, (height, width))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def iou(a, b) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


# --- registry ------------------------------------------------------------------------------------
def make_plugin(tmp_path: Path, module: str, body: str, group: str = "defectkit.proposers", name: str = "tiny") -> None:
    """An installed package in tmp_path: a module and a dist-info with an entry point."""
    (tmp_path / f"{module}.py").write_text(body)
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}:Tiny\n")


PLUGIN = '''
import numpy as np
from defectkit.propose import Proposer

class Tiny(Proposer):
    name = "tiny"
    def __init__(self, side=4):
        super().__init__()
        self.side = side
    def config(self):
        return {"side": self.side}
    def predict(self, prompts=None):
        self._check(prompts)
        mask = np.zeros(self.image.shape[:2], dtype=bool)
        mask[: self.side, : self.side] = True
        return [mask]
'''


def test_builtin_proposers_are_listed_and_unknown_names_say_what_exists():
    assert {"classical", "sam2", "hybrid", "given", "auto"} <= set(proposer_names())
    with pytest.raises(DefectkitError, match="unknown proposer 'nope'.*classical"):
        create_proposer("nope")
    with pytest.raises(DefectkitError, match="does not take options"):
        create_proposer("given", no_such_setting=1)
    with pytest.raises(DefectkitError, match="classical' has no setting 'no_such_setting'; known: dark_window"):
        create_proposer("classical", no_such_setting=1)


def test_classical_settings_are_grouped_by_channel_and_set_by_their_flat_names():
    from defectkit.propose.classical import DarkChannel, Selection

    grouped = create_proposer("classical", dark=DarkChannel(threshold=5.0), selection=Selection(max_proposals=4))
    flat = create_proposer("classical", dark_threshold=5.0, max_proposals=4)
    assert grouped.config() == flat.config()
    assert flat.dark.threshold == 5.0 and flat.dark.window == DarkChannel().window and flat.selection.max_proposals == 4
    assert list(flat.config())[:2] == ["dark_window", "dark_blur"] and list(flat.config())[-1] == "max_proposals"
    with pytest.raises(DefectkitError, match="dark_threshold must be float"):
        create_proposer("classical", dark_threshold="high")
    with pytest.raises(ValueError, match="band_sides"):
        create_proposer("classical", band_sides="left")


def test_an_installed_plugin_is_found_through_its_entry_point(tmp_path, monkeypatch):
    make_plugin(tmp_path, "tinyplug", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tiny" in proposer_names()
    proposer = create_proposer("tiny", side=3)
    masks = proposer.propose(np.zeros((10, 12, 3), dtype=np.uint8))
    assert len(masks) == 1 and masks[0].shape == (10, 12) and masks[0].sum() == 9
    assert proposer.describe() == {"name": "tiny", "side": 3}


def test_the_same_registry_serves_other_groups_and_reports_broken_plugins(tmp_path, monkeypatch):
    make_plugin(tmp_path, "brokenplug", "raise ImportError('needs a library that is not installed')", group="defectkit.embedders", name="broken")
    monkeypatch.syspath_prepend(str(tmp_path))
    embedders = Registry("embedder", "defectkit.embedders")
    embedders.register("identity", lambda: "built-in")
    assert embedders.names() == ["identity", "broken"]
    assert embedders.create("identity") == "built-in"
    with pytest.raises(DefectkitError, match="embedder 'broken' from package brokenplug.*needs a library"):
        embedders.create("broken")


# --- classical -----------------------------------------------------------------------------------
def test_classical_finds_a_dark_pore_and_a_thin_crack_on_a_textured_surface():
    image = surface()
    pore = np.zeros(image.shape[:2], dtype=np.uint8)
    cv2.ellipse(pore, (70, 180), (7, 5), 20, 0, 360, 1, -1)
    crack = np.zeros(image.shape[:2], dtype=np.uint8)
    cv2.polylines(crack, [np.array([[150, 40], [160, 80], [172, 120], [178, 150]])], False, 1, 2)
    for mask in (pore, crack):
        image[mask.astype(bool)] = (image[mask.astype(bool)] * 0.45).astype(np.uint8)
    proposer = create_proposer("classical")
    masks = proposer.propose(image)
    assert all(m.dtype == bool and m.shape == image.shape[:2] for m in masks)
    for truth in (pore.astype(bool), crack.astype(bool)):
        assert max(iou(m, truth) for m in masks) >= 0.3
    clean = proposer.propose(surface(seed=1))
    assert len(clean) <= 1  # the texture and the band themselves are not proposed
    with pytest.raises(DefectkitError, match="takes no prompts"):
        proposer.predict(Prompts(boxes=[[0, 0, 5, 5]]))


def chipped_part(notch_centre=None, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ground part on a dark background (RGB uint8) and the boolean mask of the chunk
    chipped out of its border by an elliptic notch centred at ``notch_centre`` (x, y)."""
    rng = np.random.default_rng(seed)
    height, width = 240, 320
    part = np.zeros((height, width), dtype=bool)
    part[30:210, 60:290] = True
    chunk = np.zeros((height, width), dtype=np.uint8)
    if notch_centre is not None:
        cv2.ellipse(chunk, notch_centre, (16, 24), 0, 0, 360, 1, -1)
    chunk = chunk.astype(bool) & part
    streaks = cv2.GaussianBlur(rng.normal(0, 10, (1, width)).astype(np.float32), (0, 0), 1.0)
    gray = np.where(part & ~chunk, 150 + streaks, 30) + rng.normal(0, 4, (height, width))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2), chunk


def test_classical_border_deviation_finds_a_chunk_chipped_out_of_the_part_border():
    only_edge = dict(dark_threshold=1e9, large_polarity="off", smooth_threshold=None, band_threshold=None)
    for centre in ((60, 120), (180, 210)):  # a notch in the left border, one in the bottom border
        image, chunk = chipped_part(centre)
        masks = create_proposer("classical", **only_edge).propose(image)
        assert max((iou(m, chunk) for m in masks), default=0) >= 0.5, centre
        assert max(iou(m, chunk) for m in create_proposer("classical").propose(image)) >= 0.5
    intact, _ = chipped_part(None)
    assert create_proposer("classical", **only_edge).propose(intact) == []  # a straight border is no defect


def test_given_proposes_the_regions_of_the_mask_beside_the_image():
    image_path = SAMPLE / "MT_Break" / "Imgs" / "exp1_num_116934.jpg"
    from defectkit.geometry import connected_regions
    from defectkit.images import read_image, read_mask

    image = read_image(image_path)
    masks = create_proposer("given").propose(image, image_path=str(image_path))
    assert len(masks) == len(connected_regions(read_mask(image_path.with_suffix(".png"))))
    with pytest.raises(DefectkitError, match="needs the image's path"):
        create_proposer("given").propose(image)


def test_given_reads_boxes_from_a_voc_data_set(tmp_path):
    from tests.conftest import textured, write

    write(tmp_path / "images" / "p1.png", textured())
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "p1.xml").write_text(
        "<annotation><filename>p1.png</filename><object><name>crack</name>"
        "<bndbox><xmin>10</xmin><ymin>20</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>"
    )
    proposer = create_proposer("given", source=str(tmp_path), format="voc")
    (mask,) = proposer.propose(textured(), image_path=str(tmp_path / "images" / "p1.png"))
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (10, 20, 40, 30)
    with pytest.raises(DefectkitError, match="no annotation"):
        proposer.propose(textured(), image_path=str(tmp_path / "images" / "other.png"))


# --- SAM2 (tiny, random weights) -----------------------------------------------------------------
FAST = dict(points_per_side=2, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_fraction=1.0)


def sam2(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_proposer("sam2", random_weights=True, device="cpu", **{**FAST, **options})


@pytest.fixture(scope="module")
def blob_image():
    image = surface(160, 256)
    cv2.circle(image, (120, 100), 18, (40, 40, 40), -1)
    return image


@pytest.mark.sam2
def test_random_weights_only_when_asked_and_with_a_warning():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        proposer = create_proposer("sam2", random_weights=True, device="cpu")
    assert proposer.describe()["checkpoint"] == "RANDOM WEIGHTS"


@pytest.mark.sam2
def test_sam2_automatic_masks_have_the_image_shape_and_polygonize(blob_image):
    proposer = sam2()
    masks = proposer.propose(blob_image)
    assert masks, "the generator returned no mask at all"
    assert all(m.dtype == bool and m.shape == blob_image.shape[:2] for m in masks)
    defects = [d for m in masks for d in defects_from_mask(blob_image, m, min_area=10)]
    assert defects and all(d.area >= 10 and len(d.polygon) == d.edges >= 1 for d in defects)
    assert all(0 <= x < 256 and 0 <= y < 160 for d in defects for x, y in d.polygon)
    assert proposer.describe()["mode"] == "automatic" and proposer.describe()["points_per_side"] == 2


@pytest.mark.sam2
def test_sam2_box_prompts_give_one_mask_each_from_one_image_encoding(blob_image, monkeypatch):
    proposer = sam2(mode="prompted")
    calls = {"set_image": 0, "predict": 0}
    for method in calls:
        original = getattr(proposer.predictor, method)

        def counted(*args, _original=original, _method=method, **kwargs):
            calls[_method] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(proposer.predictor, method, counted)
    proposer.set_image(blob_image)
    boxes = [[95, 75, 145, 125], [10, 10, 60, 40], [180, 120, 250, 185]]
    masks = proposer.predict(Prompts(boxes=boxes, points=[[120, 100], [30, 25], [200, 150]]))
    masks += proposer.predict(Prompts(boxes=boxes[:1]))
    assert len(masks) == 4 and all(m.shape == blob_image.shape[:2] and m.dtype == bool for m in masks)
    assert calls == {"set_image": 1, "predict": 2}  # one encoding; one batched call per predict
    with pytest.raises(DefectkitError, match="prompted mode needs"):
        proposer.predict()


@pytest.mark.sam2
def test_sam2_prompts_go_to_the_decoder_a_few_at_a_time_on_cpu(blob_image, monkeypatch):
    assert sam2(mode="prompted").describe()["prompts_per_batch"] == 4  # measured faster than all at once on CPU
    proposer = sam2(mode="prompted", prompts_per_batch=2)
    sizes = []
    original = proposer.predictor.predict

    def counted(*args, box=None, **kwargs):
        sizes.append(len(box))
        return original(*args, box=box, **kwargs)

    monkeypatch.setattr(proposer.predictor, "predict", counted)
    boxes = [[95, 75, 145, 125], [10, 10, 60, 40], [180, 120, 250, 185]]
    masks = proposer.propose(blob_image, Prompts(boxes=boxes))
    assert sizes == [2, 1] and len(masks) == 3 and all(m.shape == blob_image.shape[:2] for m in masks)


@pytest.mark.sam2
def test_sam2_tiles_large_images_and_merges_objects_cut_by_tile_borders(blob_image, monkeypatch):
    proposer = sam2(mode="tiled", tile_size=160, tile_overlap=0.25)
    # The generator's output per tile is made known: a bar across the tile border, cut in two
    # (256 x 160 image -> tiles at x 0 and x 96), must come back as one full-image mask.
    bar = np.zeros(blob_image.shape[:2], dtype=bool)
    bar[90:110, 40:220] = True
    offsets = iter([0, 96])

    def pieces(tile):
        x0 = next(offsets)
        return [{"segmentation": bar[:, x0 : x0 + 160], "predicted_iou": 0.9, "stability_score": 0.9}]

    monkeypatch.setattr(proposer, "_generate", pieces)
    masks = proposer.propose(blob_image)
    assert len(masks) == 1 and np.array_equal(masks[0], bar)


@pytest.mark.sam2
def test_sam2_tiled_prompts_go_to_the_tile_that_holds_them(blob_image, monkeypatch):
    proposer = sam2(mode="tiled", tile_size=160, tile_overlap=0.25)
    shapes = []
    original = proposer.predictor.set_image
    monkeypatch.setattr(proposer.predictor, "set_image", lambda im: shapes.append(im.shape) or original(im))
    proposer.set_image(blob_image)
    masks = proposer.predict(Prompts(boxes=[[200, 20, 240, 60], [180, 100, 230, 140]]))
    assert shapes == [(160, 160, 3)]  # both boxes lie in the right tile: one encoding of it
    assert len(masks) == 2 and all(m.shape == blob_image.shape[:2] for m in masks)
    assert not masks[0][:, :96].any()  # pasted back where the tile lies


@pytest.mark.sam2
def test_hybrid_refines_each_classical_region_with_one_prompt(blob_image):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hybrid = create_proposer("hybrid", random_weights=True, device="cpu")
    candidates = create_proposer("classical").propose(blob_image)
    masks = hybrid.propose(blob_image)
    assert len(masks) == len(candidates) >= 1 == len([c for c in candidates if c[100, 120]])
    assert hybrid.refined + hybrid.kept == len(candidates)
    described = hybrid.describe()
    assert described["source"]["name"] == "classical" and described["sam2"]["mode"] == "prompted"


def test_missing_checkpoint_says_where_to_put_which_file(tmp_path, monkeypatch):
    import defectkit.propose.sam2 as sam2_module

    monkeypatch.setattr(sam2_module, "checkpoint_dirs", lambda: [tmp_path / "checkpoints"])
    with pytest.raises(DefectkitError, match=r"sam2\.1_hiera_small\.pt.*checkpoints.*--sam2-checkpoint"):
        create_proposer("sam2", config="sam2.1_hiera_s")
    with pytest.raises(DefectkitError, match="nowhere.pt was not found"):
        create_proposer("sam2", checkpoint="nowhere.pt", random_weights=True)
    with pytest.raises(DefectkitError, match="unknown SAM2 config"):
        create_proposer("sam2", config="sam3_giant")
    auto = build_proposer("auto")
    assert auto.describe()["chose"]["name"] == "classical" and "no SAM2 checkpoint" in auto.describe()["because"]


def test_a_config_yaml_chooses_model_checkpoint_and_settings(tmp_path, monkeypatch):
    import defectkit.propose.sam2 as sam2_module

    (tmp_path / "dense.yaml").write_text("model: sam2.1_hiera_t\noptions:\n  mode: tiled\n  points_per_side: 8\n")
    monkeypatch.setattr(sam2_module, "config_dirs", lambda: [tmp_path])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proposer = create_proposer("sam2", config="dense", random_weights=True, device="cpu", tile_size=512)
    described = proposer.describe()
    assert (described["mode"], described["points_per_side"], described["tile_size"]) == ("tiled", 8, 512)


REAL = sorted(Path(__file__).resolve().parents[1].glob("checkpoints/sam2*.pt"))


@pytest.mark.skipif(not REAL, reason="no SAM2 checkpoint in checkpoints/ (put sam2.1_hiera_tiny.pt there to run this test)")
@pytest.mark.sam2
def test_hybrid_with_a_real_checkpoint_outlines_a_real_pore():
    from defectkit.images import read_image, read_mask
    from defectkit.propose.sam2 import PACKAGE_CONFIGS

    checkpoint = REAL[0]
    config = next(stem for stem, (_, name) in PACKAGE_CONFIGS.items() if name == checkpoint.name)
    path = SAMPLE / "MT_Blowhole" / "Imgs" / "exp1_num_108719.jpg"
    image, truth = read_image(path), read_mask(path.with_suffix(".png"))
    hybrid = create_proposer("hybrid", sam2_config=config, checkpoint=str(checkpoint))
    masks = hybrid.propose(image)
    assert max(iou(m, truth) for m in masks) >= 0.3
