from collections import Counter

import pytest

from defectkit.data.manifest import read_manifest
from defectkit.data.split import split_dataset, split_records
from defectkit.errors import DefectkitError


def fake_records():
    records = []
    for i in range(40):
        subtype = ["crack", "blowhole", "fray", "background"][i % 4]
        for k in range(1 + i % 3):
            records.append({"image": f"img{i}.jpg", "subtype": subtype, "crop_path": f"c{i}_{k}.png"})
        if subtype != "background":
            records.append({"image": f"img{i}.jpg", "subtype": "background", "crop_path": f"b{i}.png"})
    return records


def test_split_is_grouped_stratified_and_deterministic():
    records = fake_records()
    train, test = split_records(records, test_size=0.3, seed=0)
    assert len(train) + len(test) == len(records)
    assert not {r["image"] for r in train} & {r["image"] for r in test}
    per_stratum = Counter()
    for image in {r["image"] for r in test}:
        per_stratum[["crack", "blowhole", "fray", "background"][int(image[3:-4]) % 4]] += 1
    assert all(per_stratum[s] == 3 for s in ["crack", "blowhole", "fray", "background"])  # 30 % of 10 each
    assert split_records(records, 0.3, 0) == (train, test)
    assert split_records(records, 0.3, 1) != (train, test)


def test_bad_test_size_and_empty():
    with pytest.raises(DefectkitError, match="between 0 and 1"):
        split_records(fake_records(), test_size=1.5)
    with pytest.raises(DefectkitError, match="empty"):
        split_records([], 0.3)


def test_split_dataset_writes_readable_manifests(tmp_path):
    from tests.test_extract import generated_masks_dataset, run

    for i in range(3):
        generated_masks_dataset(tmp_path / "src" / f"batch{i}", seed=i)
    src = tmp_path / "src"
    # the mask layout wants SRC/<label>/...: gather the three batches under one root
    import shutil

    root = tmp_path / "flat"
    for batch in sorted(src.iterdir()):
        for label in batch.iterdir():
            shutil.copytree(label, root / label.name / batch.name)
    run(root, tmp_path / "crops")
    parts = split_dataset(tmp_path / "crops", tmp_path / "split", test_size=0.34, seed=0)
    train = read_manifest(tmp_path / "split" / "train")
    test = read_manifest(tmp_path / "split" / "test")
    assert len(train) == len(parts["train"]) and len(test) == len(parts["test"]) and test
    assert not {r["image"] for r in train} & {r["image"] for r in test}
