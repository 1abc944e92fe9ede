import cv2
import numpy as np
import pytest

from defectkit.crops import CropSpec, crop_region, crop_window
from defectkit.defect import Defect
from defectkit.geometry import FEATURE_NAMES, Region, connected_regions, defects_from_mask, describe, dilate_disc
from tests.conftest import textured


def mask_with(draw, shape=(120, 160)):
    canvas = np.zeros(shape, dtype=np.uint8)
    draw(canvas)
    return canvas.astype(bool)


def test_square_has_four_edges_and_exact_area():
    mask = mask_with(lambda c: cv2.rectangle(c, (40, 30), (79, 69), 1, -1))
    (defect,) = defects_from_mask(textured(), mask)
    assert defect.area == 40 * 40
    assert defect.edges == 4
    assert defect.bbox == [40, 30, 40, 40]
    assert sorted(map(tuple, defect.polygon)) == [(40, 30), (40, 69), (79, 30), (79, 69)]
    assert defect.features["solidity"] == pytest.approx(1.0)
    assert defect.features["aspect_ratio"] == pytest.approx(1.0)


def test_disc_has_many_edges_and_is_round():
    mask = mask_with(lambda c: cv2.circle(c, (80, 60), 30, 1, -1))
    (defect,) = defects_from_mask(textured(), mask)
    assert defect.edges >= 10
    assert abs(defect.area - np.pi * 30**2) / (np.pi * 30**2) < 0.03
    assert defect.features["circularity"] > 0.85
    assert defect.features["solidity"] > 0.97


def test_thin_line_is_elongated_with_its_orientation():
    mask = mask_with(lambda c: cv2.line(c, (20, 60), (140, 60), 1, 2))
    (defect,) = defects_from_mask(textured(), mask)
    assert defect.features["aspect_ratio"] > 20
    assert defect.features["circularity"] < 0.2
    assert defect.features["orientation"] == pytest.approx(0.0, abs=1.0) or defect.features["orientation"] == pytest.approx(180.0, abs=1.0)
    vertical = mask_with(lambda c: cv2.line(c, (80, 10), (80, 110), 1, 2))
    (defect,) = defects_from_mask(textured(), vertical)
    assert defect.features["orientation"] == pytest.approx(90.0, abs=1.0)


def test_ring_has_a_hole_and_its_area_excludes_it():
    mask = mask_with(lambda c: (cv2.circle(c, (80, 60), 40, 1, -1), cv2.circle(c, (80, 60), 20, 0, -1)))
    (defect,) = defects_from_mask(textured(), mask)
    assert len(defect.holes) == 1
    assert defect.area == int(mask.sum())
    assert defect.features["solidity"] < 0.85


def test_two_blobs_in_one_mask_become_two_defects_and_small_specks_drop():
    mask = mask_with(lambda c: (cv2.circle(c, (30, 30), 10, 1, -1), cv2.rectangle(c, (100, 70), (139, 99), 1, -1)))
    mask[110, 5] = True  # a one-pixel speck
    defects = defects_from_mask(textured(), mask, min_area=5)
    assert len(defects) == 2
    assert [d.bbox[0] < 80 for d in defects] == [True, False]
    assert len(defects_from_mask(textured(), mask, min_area=1)) == 3


def test_regions_come_in_scan_order_wherever_they_lie():
    rng = np.random.default_rng(0)
    for shape in ((7, 9), (60, 45), (131, 200)):
        for density in (0.02, 0.2, 0.5):
            mask = np.zeros((shape[0] + 20, shape[1] + 30), bool)
            mask[7 : 7 + shape[0], 13 : 13 + shape[1]] = rng.random(shape) < density  # away from the corner
            count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            regions = connected_regions(mask)
            assert len(regions) == count - 1
            for label, region in enumerate(regions, start=1):  # OpenCV's labels on the whole mask
                np.testing.assert_array_equal(region.full_mask(mask.shape), labels == label)
    assert connected_regions(np.zeros((5, 5), bool)) == []


def test_intensity_and_position_features():
    image = textured()
    mask = mask_with(lambda c: cv2.circle(c, (10, 60), 6, 1, -1))
    image[mask] = 40  # a dark pore at the left border
    (defect,) = defects_from_mask(image, mask)
    assert defect.features["contrast"] < -0.3
    assert defect.features["mean_inside"] == pytest.approx(40 / 255, abs=0.01)
    assert defect.features["border_distance"] < 0.05
    assert defect.features["center_x"] == pytest.approx(10.5 / 160, abs=0.01)
    assert list(defect.features) == list(FEATURE_NAMES)


def test_mask_of_another_size_is_refused():
    with pytest.raises(ValueError, match="mask is 10x10"):
        defects_from_mask(textured(), np.zeros((10, 10), dtype=bool))


def test_defect_json_round_trip():
    mask = mask_with(lambda c: cv2.circle(c, (80, 60), 15, 1, -1))
    (defect,) = defects_from_mask(textured(), mask, image_path="a.png")
    defect.category, defect.subtype, defect.confidence = "surface", "blowhole", 0.9
    again = Defect.from_dict(defect.to_dict())
    assert again == defect
    assert again.region is None and "region" not in defect.to_dict()


def test_crop_is_square_centred_and_padded():
    region = Region(70, 50, np.ones((20, 40), dtype=bool))
    spec = CropSpec(size=64, padding=0.25, min_side=8)
    assert crop_window(region, spec) == (70 + 20 - 30, 50 + 10 - 30, 60)
    image = textured()
    crop, mask = crop_region(image, region, spec)
    assert crop.shape == (64, 64, 3) and mask.shape == (64, 64)
    ys, xs = np.nonzero(mask)
    # 40 px of region in a 60 px window -> two thirds of the crop, centred
    assert xs.max() - xs.min() + 1 == pytest.approx(64 * 40 / 60, abs=1.5)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(31.5, abs=1.0)


def test_crop_at_the_image_border_is_zero_filled():
    image = textured()
    region = Region(0, 0, np.ones((10, 10), dtype=bool))
    crop, mask = crop_region(image, region, CropSpec(size=32, padding=0.5, min_side=20))
    assert crop[0, 0].tolist() == [0, 0, 0]
    assert crop[-1, -1].max() > 100
    assert mask.max() == 255


def test_small_regions_keep_context():
    region = Region(60, 60, np.ones((3, 3), dtype=bool))
    _, _, side = crop_window(region, CropSpec(size=64, min_side=32))
    assert side == 32


def test_connected_regions_are_eight_connected():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2, 2] = mask[3, 3] = True  # diagonal neighbours
    assert len(connected_regions(mask)) == 1


def test_describe_single_pixel_region():
    defect = describe(Region(5, 5, np.ones((1, 1), dtype=bool)), textured())
    assert defect.area == 1 and defect.edges >= 1


@pytest.mark.parametrize("radius", [3, 23, 24, 31, 60])
def test_dilate_disc_equals_opencv_elliptic_dilation(radius):
    rng = np.random.default_rng(radius)
    for height, width in ((radius // 2 + 1, 3 * radius), (4 * radius, 5 * radius)):
        mask = np.zeros((height, width), np.uint8)
        for _ in range(3):
            cv2.ellipse(mask, (int(rng.integers(width)), int(rng.integers(height))),
                        (int(rng.integers(1, radius)), int(rng.integers(1, radius))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        mask[rng.random(mask.shape) < 0.01] = 1  # stray pixels near the borders too
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        assert np.array_equal(dilate_disc(mask, radius), cv2.dilate(mask, kernel))

