"""`classify --engine ray` (and `segment`) on a local Ray: the same files as a local run, and nothing
lost or written twice when an actor or the driver is killed."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'defectkit[ray]'; make test installs it)")

from defectkit.cli import app  # noqa: E402
from tests.conftest import ROOT, SAMPLE, TAXONOMY, make_defect_crops  # noqa: E402

pytestmark = pytest.mark.slow  # starts Ray and loads the shipped model in its actors
MODEL = ROOT / "models" / "magnetic-tile"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The shipped examples ten times over (141 images: three of Ray's batches of 64, so that an actor
    can be killed between two) and one broken file: a bad image is an error row on Ray too."""
    folder = tmp_path_factory.mktemp("images")
    for copy in range(10):
        for path in sorted(SAMPLE.rglob("*.jpg")):
            (folder / f"{copy}-{path.name}").symlink_to(path)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def local_run(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    result = CliRunner().invoke(app, ["classify", str(images), "-m", str(MODEL), "-o", str(out), "-p", "classical", "--coco", "-q"])
    assert result.exit_code == 1, result.output  # the broken image
    return out


def files(folder):
    """Every output but the lock and the report (whose title names the folder)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in (".defectkit.lock", "report.html")}


def ray_args(images, out, *extra):
    return ["classify", str(images), "-m", str(MODEL), "-o", str(out), "-p", "classical", "--coco", "-q", "--engine", "ray", *extra]


def test_ray_writes_the_files_of_a_local_run(local_ray, images, local_run, tmp_path):
    result = CliRunner().invoke(app, ray_args(images, tmp_path / "ray", "--workers", "2"))
    assert result.exit_code == 1 and "engine: ray, 2 worker(s)" in result.output, result.output
    assert files(tmp_path / "ray") == files(local_run)


def test_segment_on_ray_writes_the_files_of_a_local_segment_run(local_ray, images, tmp_path):
    args = ["segment", str(images), "-p", "classical", "-O", "max_proposals=4", "-q"]
    local = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local")])
    assert local.exit_code == 1, local.output  # the broken image
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 1 and "engine: ray, 2 worker(s)" in result.output, result.output
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    assert '"max_proposals": 4' in (tmp_path / "ray" / "0-exp1_num_108719.json").read_text()  # the -O setting reached the actors


def test_train_and_evaluate_on_ray_embed_there_into_the_cache_a_local_run_reads(local_ray, tmp_path):
    """The crops are embedded on the actors; the vectors equal a local embedding and land in the
    same cache, so that a local run afterwards embeds nothing."""
    import numpy as np

    from defectkit.embed import EmbeddingCache, Embedder
    from defectkit.labelled import load_labelled
    from defectkit.taxonomy import Taxonomy

    data, heldout = make_defect_crops(tmp_path / "train", per_subtype=4), make_defect_crops(tmp_path / "test", per_subtype=4, seed=1)
    cache = tmp_path / "cache"
    env = {"DEFECTKIT_CACHE": str(cache)}
    backbone = ["--backbone", "resnet10t", "--backbone-weights", "random", "--image-size", "32", "--pca", "8", "-q"]
    on_ray = ["--engine", "ray", "--workers", "2"]
    trained = CliRunner().invoke(app, ["train", str(data), "-t", str(TAXONOMY), "-o", str(tmp_path / "model"), "--cv", "0",
                                       "--no-texture", *backbone, *on_ray], env=env)
    assert trained.exit_code == 0 and "embedding the crops there" in trained.output, trained.output
    assert len(list(cache.rglob("shard-*.npz"))) == 1
    records = load_labelled(data, Taxonomy.load(TAXONOMY)).records
    embedder = Embedder("resnet10t", "random", image_size=32)
    assert np.allclose(embedder.embed_records(records, EmbeddingCache(cache)), embedder.embed_files(records), atol=1e-4)

    evaluated = CliRunner().invoke(app, ["evaluate", str(heldout), "-m", str(tmp_path / "model"), "-q", *on_ray], env=env)
    assert evaluated.exit_code == 0 and "embedding the crops there" in evaluated.output, evaluated.output
    shards = sorted(cache.rglob("shard-*.npz"))
    assert len(shards) == 2  # the held-out crops, embedded on Ray too
    local = CliRunner().invoke(app, ["evaluate", str(heldout), "-t", str(TAXONOMY), "--cv", "2", *backbone], env=env)
    assert local.exit_code == 0, local.output
    assert sorted(cache.rglob("shard-*.npz")) == shards  # every crop was found in the cache


def actor_pids() -> list[int]:
    """The processes of the classify actors (Ray names them ``ray::MapWorker(MapBatches(ClassifyActor))...``)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if command.startswith(b"ray::MapWorker(MapBatches(ClassifyActor))"):
            pids.append(int(pid))
    return pids


def test_ray_batches_hold_a_local_runs_chunks(local_ray):
    """Each actor call gets consecutive rows, as many as asked for (Ray's own blocking would split
    them), so its images are classified in a local run's chunks."""
    from defectkit.distributed import in_batches

    seen = in_batches([{"path": str(i)} for i in range(40)], 16).map_batches(
        lambda batch: {"first": [batch["path"][0]], "size": [len(batch["path"])]}, batch_size=16).take_all()
    assert [(int(r["first"]), r["size"]) for r in seen] == [(0, 16), (16, 16), (32, 8)]


def test_an_actor_killed_mid_run_loses_no_image_and_writes_none_twice(local_ray, images, local_run, tmp_path):
    killed = []

    def kill_one_actor():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if (tmp_path / "ray").is_dir() and any((tmp_path / "ray").glob("*.json")):  # mid-run: some images are done
                for pid in actor_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    result = CliRunner().invoke(app, ray_args(images, tmp_path / "ray", "--workers", "1"))
    killer.join()
    assert killed, "no actor was found to kill"
    assert result.exit_code == 1, result.output
    assert files(tmp_path / "ray") == files(local_run)
    rows = (tmp_path / "ray" / "summary.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(rows))


def test_a_killed_driver_resumes_to_the_files_of_a_local_run(images, local_run, tmp_path):
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "defectkit", *ray_args(images, out), "--resume"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while driver.poll() is None and time.time() < deadline and len(list(out.glob("*.json"))) < 3:
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "kept from before" in done.stdout
    assert files(out) == files(local_run)
