import cv2
import numpy as np
import pytest

from defectkit.errors import InputError, TaxonomyError
from defectkit.images import read_image, read_mask
from defectkit.taxonomy import Taxonomy
from tests.conftest import write


def test_shipped_taxonomy_maps_raw_labels(taxonomy):
    assert taxonomy.name == "magnetic-tile"
    assert taxonomy.resolve("MT_Crack") == ("structural", "crack")
    assert taxonomy.resolve("blowhole") == ("surface", "blowhole")
    assert taxonomy.resolve("MT_Free") == ("background", "background")
    assert taxonomy.categories["background"] == ["background"]
    assert set(taxonomy.subtypes) == {"break", "crack", "fray", "blowhole", "uneven", "background"}


def test_unknown_label_names_label_and_file(taxonomy):
    with pytest.raises(TaxonomyError, match=r"'MT_Scratch'.*magnetic-tile\.yaml"):
        taxonomy.resolve("MT_Scratch")


def test_alias_to_unknown_subtype_is_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\ncategories:\n  a: [x]\naliases:\n  X: y\n")
    with pytest.raises(TaxonomyError, match="'y'"):
        Taxonomy.load(path)


def test_subtype_under_two_categories_is_refused():
    with pytest.raises(TaxonomyError, match="both"):
        Taxonomy("t", {"a": ["x"], "b": ["x"]})


def test_missing_and_malformed_taxonomy_files(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        Taxonomy.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories: [1, 2]\n")
    with pytest.raises(TaxonomyError, match="expected a mapping"):
        Taxonomy.load(bad)


def test_gray_16bit_rgba_images_read_as_rgb_uint8(tmp_path):
    gray = np.full((20, 30), 200, np.uint8)
    deep = np.full((20, 30), 200 * 257, np.uint16)
    twelve_bit = np.full((20, 30), 4095, np.uint16)
    rgba = np.dstack([np.full((20, 30), v, np.uint8) for v in (10, 20, 30, 0)])  # BGRA, fully transparent
    for name, array, expected in [
        ("g.png", gray, [200, 200, 200]),
        ("d.png", deep, [200, 200, 200]),
        ("t.tif", twelve_bit, [255, 255, 255]),
        ("a.png", rgba, [30, 20, 10]),
    ]:
        path = tmp_path / name
        assert cv2.imwrite(str(path), array)
        image = read_image(path)
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3), name
        assert image[5, 5].tolist() == expected, name


def test_corrupt_and_empty_files_name_the_file(tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg.*not a readable image"):
        read_image(corrupt)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.png.*empty"):
        read_image(empty)
    with pytest.raises(InputError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_mask_threshold_ignores_compression_noise(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:5] = 255
    mask[8, 8] = 60  # noise
    path = write(tmp_path / "m.png", mask)
    assert read_mask(path).sum() == 9
    assert read_mask(path, threshold=50).sum() == 10


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize("text, expected", [
    ("name: t\ncategories:\n  surface: [pit]\n" + BOMB, "aliases"),  # a billion laughs: refused before it expands
    ("name: t\ncategories:\n  surface: [pit]\n  surface: [scratch]\n", "duplicate key 'surface'"),
    ("name: t\ncategories:\n  surface: [pit, background]\n", "'background' is listed under category 'surface'"),
    ("name: t\ncategories:\n  surface: [pit, ../../x]\n", "cannot be a file name"),
    ("name: t\ncategories:\n  ../up: [pit]\n", "cannot be a file name"),
    ("name: t\ncategories:\n  surface: [pit]\naliases: [pit]\n", "'aliases' must map"),
])
def test_hostile_or_mistaken_taxonomies_are_refused_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "taxonomy.yaml"
    path.write_text(text)
    with pytest.raises(TaxonomyError, match=expected) as caught:
        Taxonomy.load(path)
    assert str(path) in str(caught.value)


def test_a_taxonomy_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: t\ncategories:\n  surface: [défaut]\n".encode("latin-1"))
    with pytest.raises(TaxonomyError, match="not UTF-8") as caught:
        Taxonomy.load(path)
    assert str(path) in str(caught.value)


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    png = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    for side, at in ((30000, 16), (30000, 20)):  # the IHDR's width and height, then its CRC
        png[at : at + 4] = struct.pack(">I", side)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])) & 0xFFFFFFFF)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bytes(png))
    with pytest.raises(InputError, match="declares 900,000,000 pixels") as caught:
        read_image(bomb)
    assert str(bomb) in str(caught.value)
    write(tmp_path / "fine.png", np.zeros((40, 30), np.uint8))
    assert read_image(tmp_path / "fine.png").shape == (40, 30, 3)


def test_expected_calibration_error_is_the_weighted_gap_between_confidence_and_accuracy():
    from defectkit.metrics import calibration

    perfect = calibration(np.array([1, 1, 0, 0]), np.array([1.0, 1.0, 0.0, 0.0]))
    assert perfect["ece"] == 0
    over = calibration(np.array([1, 0, 0, 0]), np.array([0.95, 0.95, 0.95, 0.95]))
    assert over["ece"] == pytest.approx(0.7) and over["bins"] == [[0.95, 0.25, 4]]


def test_precision_thresholds_keep_the_confident_predictions_that_reach_the_target():
    from defectkit.metrics import precision_thresholds

    true = np.array(["pit"] * 6 + ["scratch"] * 2 + ["pit"] * 5 + ["background"] * 5)
    predicted = np.array(["pit"] * 8 + ["scratch"] * 5 + ["background"] * 5)
    confidence = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.4, 0.3] + [0.9] * 5 + [0.9] * 5)
    chosen = precision_thresholds(true, predicted, confidence, target=0.9)
    assert chosen["pit"] == 0.7  # the six most confident pits are right; the two below are scratches
    assert chosen["scratch"] is None  # no threshold makes these five right
    assert "background" not in chosen
    assert precision_thresholds(true[:6], predicted[:6], confidence[:6], target=0.9) == {"pit": 0.0}


def test_the_false_alarm_threshold_keeps_the_proposers_false_alarms_within_the_target():
    from defectkit.metrics import false_alarm_threshold

    # six false alarms (background crops) called defects, at P(defect) 0.9 .. 0.4, one called background
    # (0.95 but not called: a background call never flags); two matched defects at 0.97 and 0.6
    p_defect = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95, 0.97, 0.6])
    called = np.array([True] * 6 + [False, True, True])
    false_alarm = np.array([True] * 7 + [False, False])
    matched = np.array([False] * 7 + [True, True])
    # 3.5 regions per clean image: each of the 7 false alarms stands for 0.5 false defects per clean image
    chosen = false_alarm_threshold(p_defect, called, false_alarm, matched, per_clean_image=3.5, target=1.0)
    assert chosen["threshold"] == 0.7001  # two false alarms allowed: 0.9 and 0.8 stay, 0.7 goes
    assert chosen["false_alarms_per_image"] == [3.0, 1.0]
    assert chosen["matched_called_defect"] == [1.0, 0.5]  # the matched defect at 0.6 goes with it
    assert false_alarm_threshold(p_defect, called, false_alarm, matched, per_clean_image=0.5, target=1.0)["threshold"] == 0.0  # room for all six
    strict = false_alarm_threshold(p_defect, called, false_alarm, matched, per_clean_image=3.5, target=0.0)
    assert strict["threshold"] == 0.9001 and strict["false_alarms_per_image"][1] == 0.0
