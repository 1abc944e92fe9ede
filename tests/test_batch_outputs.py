"""The output folder of a batch run (`segment`, `classify`): nothing overwritten, nothing lost when a
run is killed, the disk fills up or two runs meet, whatever the file names (#14 items 1-5, 7, 17)."""

import errno
import json
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from filelock import FileLock
from typer.testing import CliRunner

import defectkit.images
from defectkit import run_files
from defectkit.cli import app
from defectkit.jobs.batch import LOCK, output_names
from defectkit.jobs.segment import segment as run_segment
from defectkit.propose import create_proposer
from tests.conftest import textured, write
from tests.test_segment import pored


def segment(inputs, out, *extra):
    return CliRunner().invoke(app, ["segment", *map(str, inputs), "-o", str(out), "-p", "classical", "-q", *extra])


def parts(root: Path, count: int = 4) -> Path:
    for i in range(count):
        write(root / f"part{i}.jpg", pored(i, (40 + 20 * i, 60)))
    return root


def outputs(out: Path) -> dict[str, bytes]:
    """Every result file of a run but the lock."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != LOCK and not p.name.startswith(".")}


def test_an_out_folder_in_or_holding_the_inputs_is_refused_and_the_masks_are_kept(tmp_path):
    src = tmp_path / "set"
    write(src / "a.jpg", pored(1))
    write(src / "a.png", np.zeros((120, 160), np.uint8))  # the mask of a.jpg: the overlay a.png would replace it
    mask = (src / "a.png").read_bytes()
    for out, inputs in ((src, [src]), (src / "results", [src]), (src, [src / "a.jpg"])):
        result = segment(inputs, out)
        assert result.exit_code == 2 and "apart from the inputs" in result.output, result.output
    assert (src / "a.png").read_bytes() == mask and sorted(p.name for p in src.iterdir()) == ["a.jpg", "a.png"]
    assert segment([src / "a.jpg"], src.parent / "elsewhere").exit_code == 0


def test_a_run_killed_between_overlay_and_json_does_the_image_again_on_resume(tmp_path, monkeypatch):
    src, out = parts(tmp_path / "in"), tmp_path / "out"
    whole = tmp_path / "whole"
    assert segment([src], whole).exit_code == 0
    written = run_files.atomic_write_text

    def killed_at_the_third(path, text):
        if path.name == "part2.json":
            raise KeyboardInterrupt  # as a kill lands: after part2's overlay, before its JSON
        written(path, text)

    monkeypatch.setattr(run_files, "atomic_write_text", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_segment([src], out, create_proposer("classical"), progress=False)
    assert (out / "part2.png").is_file() and not (out / "part2.json").exists()
    monkeypatch.setattr(run_files, "atomic_write_text", written)
    result = segment([src], out, "--resume")
    assert result.exit_code == 0 and "2 kept from before" in result.output, result.output
    assert outputs(out) == outputs(whole)


def test_a_full_disk_stops_the_run_with_one_line_and_resume_completes_it(tmp_path, monkeypatch):
    src, out, whole = parts(tmp_path / "in"), tmp_path / "out", tmp_path / "whole"
    assert segment([src], whole).exit_code == 0
    write_bytes = defectkit.images.atomic_write_bytes
    calls = []

    def filling(path, data):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_bytes(path, data)

    monkeypatch.setattr(defectkit.images, "atomic_write_bytes", filling)
    result = segment([src], out)
    assert result.exit_code == 2 and "No space left on device" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output
    monkeypatch.setattr(defectkit.images, "atomic_write_bytes", write_bytes)
    result = segment([src], out, "--resume")
    assert result.exit_code == 0 and "0 failed" in result.output, result.output
    assert outputs(out) == outputs(whole)


def test_a_second_run_into_the_same_out_is_refused(tmp_path):
    src, out = parts(tmp_path / "in", 1), tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / LOCK)):  # a run in progress
        result = segment([src], out)
    assert result.exit_code == 2 and "another defectkit run" in result.output
    assert not (out / "part0.json").exists()
    assert segment([src], out).exit_code == 0


def test_a_file_name_that_is_not_utf8_is_carried_into_every_output(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    name = os.fsdecode(b"\xff-part.jpg")
    src.mkdir()
    try:  # written by Python: OpenCV's imwrite crashes on such a name
        (src / name).write_bytes(cv2.imencode(".jpg", pored(1))[1].tobytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    write(src / "plain.jpg", pored(2))
    result = segment([src], out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / f"{Path(name).stem}.json").read_text())
    assert os.fsencode(record["image"]) == os.fsencode(str(src / name))
    rows = (out / "defects.csv").read_bytes().splitlines()
    assert any(row.startswith(os.fsencode(str(src / name))) for row in rows)
    coco = json.loads((out / "coco.json").read_text())
    assert {os.fsencode(i["file_name"]) for i in coco["images"]} >= {os.fsencode(str(src / name))}


def test_inputs_sharing_a_stem_or_a_run_file_name_keep_their_own_results(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    inputs = [write(src / "a.jpg", pored(1)), write(src / "a.png", pored(2)), write(src / "coco.jpg", pored(3))]
    names = output_names(inputs, reserved={"coco"})
    assert len(set(names.values())) == 3 and "coco" not in names.values()
    tricky = [Path("x/a.jpg"), Path("y/a.jpg"), Path("x__a.jpg"), Path("x/a.png")]
    assert len(set(output_names(tricky).values())) == 4
    result = segment(inputs, out)
    assert result.exit_code == 0, result.output
    images = {json.loads((out / f"{names[p]}.json").read_text())["image"] for p in inputs}
    assert images == {str(p) for p in inputs}
    assert {i["file_name"] for i in json.loads((out / "coco.json").read_text())["images"]} == {str(p) for p in inputs}


def test_outputs_are_created_as_the_umask_allows(tmp_path):
    src, out = parts(tmp_path / "in", 1), tmp_path / "out"
    assert segment([src], out).exit_code == 0
    for file in ("part0.json", "part0.png", "defects.csv", "coco.json", "errors.jsonl"):
        assert stat.S_IMODE((out / file).stat().st_mode) == 0o666 & ~defectkit.images.UMASK, file


def test_a_clean_image_alone_still_writes_every_run_file(tmp_path):
    out = tmp_path / "out"
    assert segment([write(tmp_path / "in" / "clean.jpg", textured(seed=5))], out).exit_code == 0
    assert {"clean.json", "clean.png", "defects.csv", "coco.json", "errors.jsonl"} <= set(outputs(out))


def test_links_that_lead_nowhere_are_reported_and_a_file_as_out_is_one_line(tmp_path):
    src = parts(tmp_path / "in", 1)
    (src / "loop.jpg").symlink_to("loop.jpg")
    (src / "dangling.jpg").symlink_to("missing.jpg")
    out = tmp_path / "out"
    result = segment([src], out)
    assert result.exit_code == 1, result.output
    failed = sorted(Path(json.loads(line)["image"]).name for line in (out / "errors.jsonl").read_text().splitlines())
    assert failed == ["dangling.jpg", "loop.jpg"]
    result = segment([src / "loop.jpg", src / "part0.jpg"], tmp_path / "out2")
    assert result.exit_code == 1 and "1 failed" in result.output
    (tmp_path / "a-file").write_text("not a folder")
    result = segment([src / "part0.jpg"], tmp_path / "a-file")
    assert result.exit_code == 2 and "cannot write into --out" in result.output and "Traceback" not in result.output


def test_images_csv_gives_every_image_one_verdict_in_input_order(tmp_path):
    src, out = parts(tmp_path / "in", 2), tmp_path / "out"
    write(src / "zclean.jpg", np.full((120, 160, 3), 128, np.uint8))  # nothing to propose
    (src / "broken.jpg").write_bytes(b"not an image")
    result = segment([src], out)
    assert result.exit_code == 1, result.output
    lines = (out / "images.csv").read_text().splitlines()
    assert lines[0] == "image,verdict,defects,worst_subtype,worst_confidence,proposer,model"
    verdicts = {Path(line.split(",")[0]).name: line.split(",")[1] for line in lines[1:]}
    assert [Path(line.split(",")[0]).name for line in lines[1:]] == ["broken.jpg", "part0.jpg", "part1.jpg", "zclean.jpg"]
    assert verdicts == {"broken.jpg": "failed", "part0.jpg": "defect", "part1.jpg": "defect", "zclean.jpg": "ok"}
    (src / "broken.jpg").unlink()
    assert segment([src], out, "--resume").exit_code == 0
    assert (out / "images.csv").read_text().splitlines()[1:] == [line for line in lines[1:] if "broken" not in line]


def test_overlays_for_defects_only_as_jpeg_and_an_ok_stamp_on_clean_images(tmp_path):
    src, out = parts(tmp_path / "in", 1), tmp_path / "out"
    write(src / "zclean.jpg", np.full((120, 160, 3), 128, np.uint8))
    assert segment([src], out, "--overlays", "defects", "--overlay-format", "jpg").exit_code == 0
    assert (out / "part0.jpg").is_file() and not (out / "zclean.jpg").exists() and not list(out.glob("*.png"))
    again = segment([src], out, "--overlays", "defects", "--overlay-format", "jpg", "--resume")
    assert again.exit_code == 0 and "2 kept from before" in again.output, again.output
    everything = tmp_path / "all"
    assert segment([src], everything).exit_code == 0
    stamped = cv2.cvtColor(cv2.imread(str(everything / "zclean.png")), cv2.COLOR_BGR2RGB)
    assert (stamped[:20, :30] != 128).any() and (stamped[60:, 60:] == 128).all()  # OK in a corner, the rest untouched
    bad = segment([src], tmp_path / "x", "--overlays", "some")
    assert bad.exit_code == 2 and "--overlays must be one of all, defects, none" in bad.output


def test_a_missing_input_or_a_bad_option_is_an_error_before_anything_runs(tmp_path):
    result = segment([tmp_path / "nowhere"], tmp_path / "out")
    assert result.exit_code == 2 and "input not found" in result.output and str(tmp_path / "nowhere") in result.output
    assert not (tmp_path / "out").exists()
    listing = tmp_path / "list.txt"
    write(tmp_path / "a.jpg", pored(1))
    listing.write_text("a.jpg\ngone.jpg\n")  # a stale line in a list: one failed image, not a failed run
    result = segment([listing], tmp_path / "out")
    assert result.exit_code == 1 and "1 failed" in result.output
    result = segment([tmp_path / "a.jpg"], tmp_path / "out2", "-O", "dark_threshold=abc")
    assert result.exit_code == 2 and "option dark_threshold must be float" in result.output
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "a.jpg"), "-m", str(tmp_path / "no-model"), "-o",
                                      str(tmp_path / "out3"), "-p", "nonsense"])
    assert result.exit_code == 2 and "unknown proposer 'nonsense'" in result.output
    result = CliRunner().invoke(app, ["classify", str(tmp_path / "a.jpg"), "-m", str(tmp_path / "no-model"), "-o",
                                      str(tmp_path / "out4"), "--defect-threshold", "1.5"])
    assert result.exit_code == 2 and "--defect-threshold 1.5: a probability lies between 0 and 1" in result.output
