"""Classifying and segmenting on a Ray cluster (``pip install defectkit[ray]``): Ray Data moves the
images through an actor pool, each actor loads the classifier (or the proposer) once, and the driver writes exactly the files a local
run writes (``run_files.RunFiles``: per-image JSON and overlay, CSVs, COCO, report, resume).

Each actor reads its images itself, from paths every machine sees (a shared file system): an
unreadable or corrupt file is then one error row, as in a local run, rather than a failed read of
the whole data set. The images come back with their results in input order (Ray Data keeps it
when asked), so the driver's resume and CSV order are those of a local run. An actor that dies is
restarted and its batch retried (``max_restarts``, ``max_task_retries``): no image is lost, and
since the driver writes each image once, in order, none is written twice.

``train`` and ``evaluate`` use the same pool for their one heavy step, embedding the crops
(:class:`RayEmbedder`); the ensemble fit stays on the driver.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from defectkit.errors import DefectkitError
from defectkit.threads import use_threads


class RemoteError(DefectkitError):
    """An image's failure on an actor, carried back to the driver."""


BATCH_IMAGES = 64  # images per Ray batch: four of a local run's chunks, so that scheduling costs less an image
EMBED_BATCH = 256  # crops per Ray batch when embedding a crop data set


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DefectkitError("--engine ray needs Ray: pip install 'defectkit[ray]'") from None
    return ray


def start(address: str | None = None, cpus: int | None = None):
    """Join the cluster at ``address`` (``auto``: the one this machine is part of), or start a
    local one; keeps results in input order."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    return ray


class _ImageActor:
    """Batches of image paths in, one row per image out: ``path``, ``record`` (the per-image JSON a
    local run writes, as text; empty on error), ``error`` (JSON with type and message; empty when
    fine) and, where asked for (``images``), ``image`` (the decoded RGB image, for overlays).
    Without it a row is a few kilobytes of text: no pixels go through Ray's object store."""

    images = True

    def results(self, paths: list[str]) -> Iterator[tuple[str, np.ndarray | None, dict | Exception]]:
        """``(path, image, record or the exception that stopped it)`` for each path, in order."""
        from defectkit.images import read_image

        for path in paths:
            try:
                image = read_image(path)
                yield path, image, self.analyse(image, path)
            except Exception as exc:  # one bad image is one error row
                yield path, None, exc

    def analyse(self, image: np.ndarray, path: str) -> dict:
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from defectkit.export import dumps

        out: dict[str, list] = {"path": [], "record": [], "error": [], **({"image": []} if self.images else {})}
        for path, image, result in self.results([str(p) for p in batch["path"]]):
            failed = isinstance(result, Exception)
            out["path"].append(str(path))
            out["record"].append("" if failed else dumps(result))
            out["error"].append(json.dumps({"type": type(result).__name__, "message": str(result)}) if failed else "")
            if self.images:
                out["image"].append(np.zeros((0, 0, 3), np.uint8) if failed else image)
        return out


class ClassifyActor(_ImageActor):
    """One per worker: the classifier loaded once, then batches of image paths classified."""

    def __init__(self, model_dir: str, proposer: str = "auto", proposer_options: dict | None = None, threads: int = 1,
                 device: str | None = None, classifier_options: dict | None = None, images: bool = True):
        from defectkit.pipeline import DefectClassifier

        self.images = images

        use_threads(threads)  # this actor's share of the machine's cores
        self.classifier = DefectClassifier.load(model_dir, proposer, proposer_options=proposer_options, device=device, **(classifier_options or {}))

    def results(self, paths: list[str]):
        """The batch's images classified in a local run's chunks (one backbone pass and one classifier
        call for the regions of each chunk, so the same figures come out), read and proposed on this
        actor's thread (a second thread proposing ahead, as a local run has, measured slower:
        benchmarks/ray_speed.py)."""
        from defectkit.pipeline import CHUNK_IMAGES

        for path, image, result in self.classifier.stream(paths, chunk_size=CHUNK_IMAGES, workers=0):
            yield path, image, result if isinstance(result, Exception) else result.to_json()


class SegmentActor(_ImageActor):
    """One per worker: the proposer built once, then batches of image paths segmented."""

    def __init__(self, proposer: str = "auto", proposer_options: dict | None = None, threads: int = 1, device: str | None = None,
                 proposer_model: str | None = None, min_area: int = 10, polygon_tolerance: float = 1.0, images: bool = True):
        from defectkit.propose import build_proposer

        self.images = images

        use_threads(threads)  # this actor's share of the machine's cores
        self.proposer = build_proposer(proposer, options=proposer_options, proposer_model=proposer_model, device=device)
        self.description = self.proposer.describe()
        self.min_area, self.polygon_tolerance = min_area, polygon_tolerance

    def analyse(self, image: np.ndarray, path: str) -> dict:
        from defectkit.defect import image_record
        from defectkit.geometry import polygonize

        masks = self.proposer.propose(image, image_path=path)
        defects = polygonize(masks, image, path, self.min_area, self.polygon_tolerance)
        return image_record(path, (image.shape[1], image.shape[0]), defects, proposer=self.description)


class EmbedActor:
    """One per worker: the embedder built once (from the driver's settings), then batches of crop
    files (``crop_path``, ``mask_path``; "" for none) embedded; the vectors go back with the
    identity of the backbone that made them."""

    def __init__(self, threads: int = 1, **settings):
        from defectkit.embed import Embedder

        use_threads(threads)  # this actor's share of the machine's cores
        self.embedder = Embedder(**settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from defectkit.embed.cache import identity_hash

        records = [{"crop_path": str(c), "mask_path": str(m) or None} for c, m in zip(batch["crop_path"], batch["mask_path"])]
        vectors = self.embedder.embed_files(records)
        return {"vector": list(vectors), "identity": [identity_hash(self.embedder.identity)] * len(records)}


class RayEmbedder:
    """``embedder``, with the crops that the cache lacks embedded on a Ray actor pool (``train`` and
    ``evaluate --engine ray``). The vectors come back to the driver, which fills the same embedding
    cache a local run fills; the crop files and the backbone's weights file must be at the same
    path on every machine (a shared file system), and so should the cache to be shared."""

    def __init__(self, embedder, workers: int = 1, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                 batch_size: int = EMBED_BATCH):
        self.embedder = embedder
        self.workers, self.cpus_per_worker, self.gpus_per_worker, self.batch_size = workers, cpus_per_worker, gpus_per_worker, batch_size

    def embed_records(self, records, cache=None, progress: bool = False) -> np.ndarray:
        return self.embedder.embed_records(records, cache, progress, embed_files=self.embed_files)

    def embed_files(self, records, progress: bool = False) -> np.ndarray:
        from tqdm import tqdm

        from defectkit.embed.cache import identity_hash

        e = self.embedder
        settings = {"backbone": e.backbone, "weights": str(e.weights), "image_size": e.image_size, "mask_mode": e.mask_mode,
                    "seed": e.seed, "batch_size": e.batch_size, "device": "cuda" if self.gpus_per_worker else "cpu"}
        rows = [{"crop_path": str(Path(r["crop_path"]).resolve()), "mask_path": str(Path(r["mask_path"]).resolve()) if r.get("mask_path") else ""}
                for r in records]
        ds = _on_actors(in_batches(rows, self.batch_size), EmbedActor, settings, self.workers, self.cpus_per_worker, self.gpus_per_worker, self.batch_size)
        expected = identity_hash(e.identity)
        vectors = []
        with tqdm(total=len(rows), desc="embed (ray)", unit="crop", disable=not progress) as bar:
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                if set(batch["identity"]) != {expected}:
                    raise DefectkitError("the Ray workers' backbone differs from this machine's (another weights file at "
                                         f"{e.weights}?); every machine needs the same file at the same path")
                vectors.append(np.stack(batch["vector"]).astype(np.float32))
                bar.update(len(batch["vector"]))
        out = np.concatenate([np.zeros((0, e.dim), np.float32), *vectors])
        if len(out) != len(rows):
            raise RuntimeError(f"Ray returned {len(out)} vectors for {len(rows)} crops")
        return out


def in_batches(rows: list[dict], batch_size: int):
    """A Ray Dataset of ``rows`` in blocks of ``batch_size``, so that each actor call gets the rows a
    local run would take together. Ray's own blocking (``from_items``) splits them otherwise, into
    calls of a few rows that cost more each, and whose backbone passes differ from a local run's in
    the last bits (batches under 16 crops take another convolution path), so a score rounded to 4
    places could differ."""
    import pandas as pd

    ray = require_ray()
    return ray.data.from_pandas([pd.DataFrame(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)])


def _on_actors(ds, actor: type, settings: dict, workers: int, cpus_per_worker: float, gpus_per_worker: float, batch_size: int):
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        actor,
        fn_constructor_kwargs={**settings, "threads": max(1, int(cpus_per_worker))},
        batch_size=batch_size,
        compute=ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
        max_restarts=-1,
        max_task_retries=-1,
    )


def classify_dataset(ds, model_dir: str | Path, proposer: str = "auto", proposer_options: dict | None = None, workers: int = 1,
                     cpus_per_worker: float = 1, gpus_per_worker: float = 0, device: str | None = None,
                     classifier_options: dict | None = None, batch_size: int = BATCH_IMAGES, images: bool = True):
    """A Ray Dataset of image paths (column ``path``) -> one of results (see ``_ImageActor``):
    chain it with any Ray pipeline (``write_parquet`` and so on). ``images=False`` leaves out the
    decoded images (much less to move; read them where they are needed). A data set made by
    :func:`in_batches` gives the figures of a local run to the last digit; one blocked otherwise
    may differ in the fourth decimal of a score."""
    settings = {"model_dir": str(model_dir), "proposer": proposer, "proposer_options": proposer_options, "device": device,
                "classifier_options": classifier_options, "images": images}
    return _on_actors(ds, ClassifyActor, settings, workers, cpus_per_worker, gpus_per_worker, batch_size)


def segment_dataset(ds, proposer: str = "auto", proposer_options: dict | None = None, workers: int = 1, cpus_per_worker: float = 1,
                    gpus_per_worker: float = 0, device: str | None = None, proposer_model: str | None = None, min_area: int = 10,
                    polygon_tolerance: float = 1.0, batch_size: int = BATCH_IMAGES, images: bool = True):
    """As :func:`classify_dataset`, the regions proposed and polygonized, unclassified (``segment``)."""
    settings = {"proposer": proposer, "proposer_options": proposer_options, "device": device, "proposer_model": proposer_model,
                "min_area": min_area, "polygon_tolerance": polygon_tolerance, "images": images}
    return _on_actors(ds, SegmentActor, settings, workers, cpus_per_worker, gpus_per_worker, batch_size)


def ray_outcomes(dataset=classify_dataset, *args, **settings):
    """The ``outcomes`` of a batch run (see ``jobs.batch.run_batch``), computed on Ray by
    ``dataset`` (:func:`classify_dataset` or :func:`segment_dataset`) with ``args`` and ``settings``.
    The images come back as paths only and are read again here for the overlays: decoding a file
    costs less than moving its pixels through Ray."""
    from defectkit.defect import defects_from_record
    from defectkit.images import read_image

    def outcomes(paths: Iterable[Path]) -> Iterator[tuple]:
        paths = list(paths)
        if not paths:
            return
        ds = dataset(in_batches([{"path": str(p)} for p in paths], settings.get("batch_size", BATCH_IMAGES)), *args, images=False, **settings)
        for expected, row in zip(paths, ds.iter_rows()):
            if row["path"] != str(expected):
                raise RuntimeError(f"Ray returned {row['path']} where {expected} was due: results out of order")
            if row["error"]:
                error = json.loads(row["error"])
                # the actor's exception as the driver records it: the same type name and message
                yield expected, None, type(error["type"], (RemoteError,), {})(error["message"])
                continue
            record = json.loads(row["record"])
            yield expected, read_image(expected), (record, defects_from_record(record))

    return outcomes
