"""Speed and memory of defectkit next to what its networks themselves cost, measured in one run.

    .venv/bin/python benchmarks/speed.py [--quick] [--device cpu|cuda] [--json PATH] [--only 1,4,...]

Prints six measurements, each with its target and PASS/FAIL, then one table and the machine:

1. crop classification: crops/s of the embed + hierarchy path ``DefectClassifier`` runs per image
   (``crop_features`` + ``decide``) on real magnetic-tile crops, next to the bare backbone forward
   pass on the same tensors and batch size. Target: >= 0.8 x bare.
2. prompted SAM2: one image with K = 1, 8, 32 box prompts through the ``sam2`` proposer next to the
   bare ``sam2`` calls (one ``set_image``, one batched ``predict``), and the naive loops it replaces.
   Target: <= 1.2 x bare for every K.
3. automatic SAM2: seconds per image at the proposer's default settings, and with fewer points,
   other point batches and tiling (no target: the figures say what the settings cost).
4. whole-image classify with the classical proposer (`--proposer auto`: the model's learned one): images/s over 200 images through the path of
   ``defectkit classify``, with each stage's share of the work (its seconds, summed over the worker
   thread that proposes ahead and the main thread), and the same images one at a time for
   comparison. Target: no stage but the networks' above 20 %.
5. memory: peak resident memory after 50 and after 1,000 images of that path (a fresh process).
   Target: growth <= 10 %.
6. retraining: ``train`` twice on the same crops with a fresh embedding cache (``--cv 0``).
   Target: the second run >= 5 x faster.

SAM2 runs the real tiny model (sam2.1_hiera_t) with RANDOM weights unless its checkpoint is in
checkpoints/: the timings are the network's, the masks mean nothing. On CPU every library runs on one
thread, as the ``classify``, ``train`` and ``evaluate`` commands do (see ``defectkit.threads``); on
CUDA SAM2 runs under bf16 autocast, as the proposer does. The images come from
../shared/datasets/magnetic-tile (or the shipped examples, repeated, when it is absent).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "magnetic-tile"
EXAMPLES = ROOT / "examples" / "magnetic-tile"
TAXONOMY = ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml"
NETWORK_STAGES = ("embed",)
HEAVY_BACKBONE = "resnet50"  # the classical proposer is not a network; SAM2's would be "propose"


@dataclass
class Row:
    number: int
    name: str
    figure: str
    target: str
    passed: bool | None  # None: no target
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")


# --- helpers -------------------------------------------------------------------------------------
def source_root() -> Path:
    return SHARED if SHARED.is_dir() else EXAMPLES


def images(count: int, tmp: Path) -> list[Path]:
    """``count`` distinct image paths spread over the data set's classes; where the data set has
    fewer, links to its images repeated under new folders (each link is a separate input)."""
    pool = sorted(source_root().glob("*/Imgs/*.jpg"))
    if count <= len(pool):
        return [pool[i * len(pool) // count] for i in range(count)]
    out = []
    for i in range(count):
        link = tmp / "repeated" / f"r{i // len(pool)}" / pool[i % len(pool)].name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(pool[i % len(pool)].resolve())
        out.append(link)
    return out


def crop_set(tmp: Path, per_class: int) -> Path:
    """A crop data set (``defectkit extract``, masks format) of the first ``per_class`` images of each class."""
    from defectkit.jobs.extract import extract
    from defectkit.taxonomy import Taxonomy

    src = tmp / "labelled"
    for folder in sorted(source_root().glob("MT_*")):
        (src / folder.name / "Imgs").mkdir(parents=True, exist_ok=True)
        for image in sorted((folder / "Imgs").glob("*.jpg"))[:per_class]:
            for file in (image, image.with_suffix(".png")):
                if file.exists():
                    (src / folder.name / "Imgs" / file.name).symlink_to(file.resolve())
    extract(src, tmp / "crops", Taxonomy.load(TAXONOMY), progress=False)
    return tmp / "crops"


def syncer(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def best_of(repeats: int, *functions, sync=lambda: None) -> list[float]:
    """The fastest of ``repeats`` wall times of each function, the functions taking turns (so a
    load that comes and goes on a shared machine hits them alike)."""
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for i, function in enumerate(functions):
            sync()
            start = time.perf_counter()
            function()
            sync()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def sam2_autocast(device: str):
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()


def load_classifier(model: Path, device: str, proposer="classical"):
    import torch

    from defectkit.pipeline import DefectClassifier

    classifier = DefectClassifier.load(model, proposer)
    embedder = classifier.bundle.embedder()
    embedder.device = torch.device(device)
    embedder.model.to(embedder.device)
    return classifier


# --- 1. crop classification ------------------------------------------------------------------------
def crop_classification(classifier, crops_dir: Path, count: int, repeats: int, device: str) -> Row:
    import torch

    from defectkit.classifier import decide
    from defectkit.data.manifest import read_manifest
    from defectkit.features import crop_features
    from defectkit.images import read_image, read_mask

    bundle = classifier.bundle
    embedder = bundle.embedder()
    records = read_manifest(crops_dir)
    records = [records[i % len(records)] for i in range(count)]
    crops = [read_image(r["crop_path"]) for r in records]
    masks = [read_mask(r["mask_path"]) > 0 for r in records]
    size = embedder.batch_size
    batches = [torch.from_numpy(np.stack([embedder.prepare(c, m) for c, m in zip(crops[i : i + size], masks[i : i + size])]))
               .to(embedder.device).contiguous(memory_format=torch.channels_last)  # as Embedder hands them to the model
               for i in range(0, count, size)]

    def bare():
        with torch.inference_mode():
            for batch in batches:
                embedder.model(batch)

    def full():  # what DefectClassifier.classify_defects does with an image's crops
        decide(bundle.model, crop_features(records, crops, masks, bundle.spec, embedder))

    def from_files():  # the same from crop files, as train and evaluate read them
        decide(bundle.model, bundle.features(records))

    X = crop_features(records, crops, masks, bundle.spec, embedder)
    few = 3  # about the regions of one image
    t_bare, t_full, t_files, t_decide, t_decide_few, t_prepare = best_of(
        repeats, bare, full, from_files, lambda: decide(bundle.model, X), lambda: decide(bundle.model, X[:few]),
        lambda: [embedder.prepare(c, m) for c, m in zip(crops, masks)], sync=syncer(device))
    ratio = t_bare / t_full
    return Row(1, "crop classification", f"{count / t_full:.0f} crops/s = {ratio:.2f} x bare ({count / t_bare:.0f} crops/s)",
               ">= 0.80 x bare", ratio >= 0.8,
               [f"{count} real crops, batches of {size} ({embedder.backbone} at {embedder.image_size} px), best of {repeats}",
                f"from crop files (bundle.features + decide): {count / t_files:.0f} crops/s = {t_bare / t_files:.2f} x bare",
                f"per crop: backbone {t_bare / count * 1000:.2f} ms, preparing its input (resize, normalise) {t_prepare / count * 1000:.2f} ms, "
                f"the hierarchy (decide) {t_decide / count * 1000:.2f} ms",
                f"decide alone: {t_decide * 1000:.1f} ms for {count} rows, {t_decide_few * 1000:.1f} ms for {few} rows "
                "(a fixed cost per call: what one image's regions pay in classify)"],
               {"crops": count, "batch": size, "bare_s": t_bare, "full_s": t_full, "files_s": t_files, "ratio": ratio,
                "decide_s": t_decide, f"decide_{few}_rows_s": t_decide_few, "prepare_s": t_prepare})


# --- 2. prompted SAM2 ------------------------------------------------------------------------------
def sam2_proposer(device: str, **options):
    from defectkit.propose import create_proposer
    from defectkit.propose.sam2 import find_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proposer = create_proposer("sam2", device=device, random_weights=True, **options)
    weights = "real weights" if find_checkpoint("sam2.1_hiera_t") else "RANDOM weights (timing only)"
    return proposer, f"sam2.1_hiera_t, {weights}"


def prompted_sam2(image: np.ndarray, ks: list[int], naive_ks: list[int], repeats: int, device: str) -> Row:
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from defectkit.propose.base import Prompts

    proposer, model = sam2_proposer(device, mode="prompted")
    predictor = SAM2ImagePredictor(proposer.model)  # the same model, called directly
    height, width = image.shape[:2]
    rng = np.random.default_rng(0)
    figures, ratios, notes = {}, [], []
    for k in ks:
        sides = rng.uniform(16, 0.5 * min(height, width), size=(k, 2))
        corners = rng.uniform(0, 1, size=(k, 2)) * ([width, height] - sides)
        boxes = np.hstack([corners, corners + sides]).astype(np.float32)

        def bare():
            with torch.inference_mode(), sam2_autocast(device):
                predictor.set_image(image)
                predictor.predict(box=boxes, multimask_output=False)

        def ours():
            proposer.propose(image, Prompts(boxes=boxes))

        def one_predict_each():
            with torch.inference_mode(), sam2_autocast(device):
                predictor.set_image(image)
                for box in boxes:
                    predictor.predict(box=box[None], multimask_output=False)

        def one_encoding_each():
            with torch.inference_mode(), sam2_autocast(device):
                for box in boxes:
                    predictor.set_image(image)
                    predictor.predict(box=box[None], multimask_output=False)

        naive = [one_predict_each] + ([one_encoding_each] if k in naive_ks else [])
        times = best_of(repeats, bare, ours, sync=syncer(device)) + best_of(1, *naive, sync=syncer(device))
        ratios.append(times[1] / times[0])
        figures[k] = dict(zip(["bare_s", "proposer_s", "predict_per_prompt_s", "set_image_per_prompt_s"], times))
        naive = f"{times[3]:.2f} s" if len(times) > 3 else "not run (K encodings)"
        notes.append(f"K={k:>2}: proposer {times[1]:.2f} s, bare {times[0]:.2f} s ({times[1] / times[0]:.2f} x); "
                     f"naive: predict per prompt {times[2]:.2f} s, set_image + predict per prompt {naive}")
    notes.append(f"{model}; one {width}x{height} image; proposer and bare: best of {repeats}, naive loops: once")
    worst = max(ratios)
    return Row(2, "prompted SAM2", f"worst K: {worst:.2f} x bare", "<= 1.2 x bare, every K", worst <= 1.2, notes,
               {"model": model, "by_k": figures})


# --- 3. automatic SAM2 -----------------------------------------------------------------------------
def automatic_sam2(image: np.ndarray, variants: list[dict], device: str) -> Row:
    from defectkit.propose.sam2 import DEFAULTS

    notes, data = [], []
    for options in variants:
        proposer, model = sam2_proposer(device, **options)
        sync = syncer(device)
        sync()
        start = time.perf_counter()
        masks = proposer.propose(image)
        sync()
        seconds = time.perf_counter() - start
        settings = {**DEFAULTS, **options}
        label = "default: " if not options else ""
        tiles = f", tiled at {settings['tile_size']} px" if options.get("mode") == "tiled" else ""
        notes.append(f"{label}points_per_side {settings['points_per_side']}, points_per_batch {settings['points_per_batch']}{tiles}: "
                     f"{seconds:.1f} s/image ({len(masks)} masks)")
        data.append({"options": options, "seconds": seconds, "masks": len(masks)})
    notes.append(f"{model}; one {image.shape[1]}x{image.shape[0]} image (the model sees it at 1024x1024, each tile too)")
    first = data[0]
    label = "default settings" if not first["options"] else "smallest setting (default not run)"
    return Row(3, "automatic SAM2", f"{first['seconds']:.1f} s/image at {label}", "(report)", None, notes, {"model": model, "variants": data})


# --- 4. whole-image classify -----------------------------------------------------------------------
def whole_image(classifier, paths: list[Path], tmp: Path) -> Row:
    from defectkit.jobs.classify import ClassifyOptions, classify_images
    from defectkit.timing import Timings

    classify_images(paths[:3], tmp / "warm", classifier, progress=False)  # first-call costs out of the figure
    runs = {}
    for name, options in (("default", ClassifyOptions()), ("one at a time", ClassifyOptions(chunk_size=1, workers=0))):
        timings = Timings()
        start = time.perf_counter()
        report, rows = classify_images(paths, tmp / name.replace(" ", "-"), classifier, options, progress=False, timings=timings)
        runs[name] = (time.perf_counter() - start, timings, report, rows)
    seconds, timings, report, rows = runs["default"]
    shares = timings.shares()
    described = classifier.proposer.describe()
    learned = "learned" in (described.get("name"), described.get("chose", {}).get("name"))
    networks = NETWORK_STAGES + (("propose",) if learned else ())  # a learned proposer is a network
    worst = max((s for s in shares if s not in networks), key=shares.get)
    per_image = {s: timings.seconds[s] / len(paths) * 1000 for s in shares}
    main_thread = sum(timings.seconds[s] for s in ("embed", "classify", "write"))
    others = [s for s in shares if s not in networks and s != worst]
    runner_up = max(others, key=shares.get)
    single = runs["one at a time"]
    channels = proposer_profile(classifier.proposer, paths) if classifier.proposer.name == "classical" else {}
    notes = [f"{len(paths)} images, {report.done} classified, {len(report.failed)} failed, {len(rows)} defects; "
             f"defaults: regions of {ClassifyOptions().chunk_size} images embedded and classified together, "
             f"a worker thread reading and proposing ahead",
             "share of the work (stage seconds summed over both threads): "
             + ", ".join(f"{s} {shares[s] * 100:.0f} % ({per_image[s]:.1f} ms)" for s in shares),
             f"next largest non-network stage: {runner_up} {shares[runner_up] * 100:.0f} %",
             *(["the classical proposer's own time, ms an image (alone, one thread): "
                + ", ".join(f"{name} {ms:.1f}" for name, ms in channels.items())] if channels else []),
             f"wall: {seconds / len(paths) * 1000:.1f} ms an image; the stages add up to {timings.total / seconds * 100:.0f} % of it; "
             f"the main thread (embed, classify, write) is busy {main_thread / seconds * 100:.0f} % of it and waits for the worker the rest",
             f"one image at a time, no worker (the path before batching): {single[2].done / single[0]:.1f} images/s, "
             f"classify {single[1].shares()['classify'] * 100:.0f} %, embed {single[1].shares()['embed'] * 100:.0f} %; "
             f"same defects: {[(r['subtype'], r['area']) for r in single[3]] == [(r['subtype'], r['area']) for r in rows]}"]
    return Row(4, "whole-image classify", f"{report.done / seconds:.1f} images/s; largest non-network stage: {worst} {shares[worst] * 100:.0f} % of the work",
               "no non-network stage > 20 %", shares[worst] <= 0.2, notes,
               {"images": len(paths), "seconds": seconds, "shares": shares, "ms_per_image": per_image,
                "one_at_a_time_seconds": single[0], "one_at_a_time_shares": single[1].shares(), "proposer_ms": channels})


def proposer_profile(proposer, paths: list[Path]) -> dict[str, float]:
    """Milliseconds an image in each channel of the classical proposer (and in choosing among them)."""
    import cv2

    from defectkit.images import gray, read_image
    from defectkit.propose.classical import CHANNELS

    seconds = dict.fromkeys(["gradient", *CHANNELS, "select"], 0.0)
    for path in paths:
        g = gray(read_image(path))
        start = time.perf_counter()
        streaks = np.abs(cv2.Sobel(g.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3))  # as candidates() does
        seconds["gradient"] += time.perf_counter() - start
        found = []
        for name in CHANNELS:
            start = time.perf_counter()
            found += proposer.channel(name, g, streaks)
            seconds[name] += time.perf_counter() - start
        start = time.perf_counter()
        proposer.select(found, g.size)
        seconds["select"] += time.perf_counter() - start
    return {name: value / len(paths) * 1000 for name, value in seconds.items()}


# --- 5. memory -------------------------------------------------------------------------------------
def memory_worker(model: Path, first: int, total: int, device: str) -> None:
    """Run in a fresh process: classify ``total`` images, print the peak RSS after ``first`` and after all."""
    from defectkit.jobs.classify import classify_images
    from defectkit.threads import use_one_thread

    if device == "cpu":
        use_one_thread()
    with tempfile.TemporaryDirectory() as tmp:
        paths = images(total, Path(tmp))
        classifier = load_classifier(model, device)
        peaks, calls = {}, [0]
        stream = classifier.stream

        def counted(*args, **kwargs):  # the peak when the first ``first`` results have come out
            for outcome in stream(*args, **kwargs):
                calls[0] += 1
                if calls[0] == first:
                    peaks["first"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                yield outcome

        classifier.stream = counted
        report, _ = classify_images(paths, Path(tmp) / "out", classifier, progress=False)
        peaks["all"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"first": first, "total": total, "done": report.done, "peak_kib": peaks}))


def memory(model: Path, first: int, total: int, device: str) -> Row:
    command = [sys.executable, __file__, "--memory-worker", str(first), str(total), "--model", str(model), "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    before, after = result["peak_kib"]["first"] / 1024, result["peak_kib"]["all"] / 1024
    growth = after / before - 1
    return Row(5, "memory", f"peak RSS {before:.0f} MiB after {first} images, {after:.0f} MiB after {total} ({growth * 100:+.1f} %)",
               "growth <= 10 %", growth <= 0.10,
               [f"a fresh process through classify_images (the path of `defectkit classify`), outputs written to a temp folder; {result['done']} classified"],
               {"first": first, "total": total, "peak_mib_first": before, "peak_mib_all": after, "growth": growth})


# --- 6. retraining ---------------------------------------------------------------------------------
def retraining(crops_dir: Path, tmp: Path, repeats: int) -> Row:
    from defectkit.classifier import ClassifierConfig
    from defectkit.embed import EmbeddingCache
    from defectkit.taxonomy import Taxonomy
    from defectkit.timing import Timings
    from defectkit.threads import cpu_count
    from defectkit.jobs.train import train

    def run(name: str, cache, jobs=None, config=ClassifierConfig()) -> tuple[float, dict, object]:
        timings = Timings()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = train(crops_dir, Taxonomy.load(TAXONOMY), tmp / name, config, cv=0, cache=cache,
                           progress=False, timings=timings, jobs=jobs)
        return result.seconds, dict(timings.seconds), result

    run("warm-up", None)  # first-call costs of the process out of the figures
    cold, warm = [], []
    for repeat in range(repeats):  # each time a fresh cache: train, then train again
        cache = EmbeddingCache(tmp / f"cache-{repeat}")
        cold.append(run(f"cold-{repeat}", cache))
        warm.append(run(f"warm-{repeat}", cache))
    (first, stages1, _), (second, stages2, result) = min(cold, key=lambda r: r[0]), min(warm, key=lambda r: r[0])
    speedup = first / second
    one_fit = min(run(f"one-thread-{repeat}", cache, 1)[1]["fit"] for repeat in range(repeats))  # the folds one after another
    profile = cProfile.Profile()  # one thread, so that the profile sees every fit
    profile.runcall(run, "profiled", cache, 1)
    stats = pstats.Stats(profile).stats
    one_thread = max(entry[3] for entry in stats.values())
    xgboost = sum(entry[3] for (file, _, function), entry in stats.items() if function == "fit" and file.endswith("xgboost/sklearn.py"))
    heavy = ClassifierConfig(backbone=HEAVY_BACKBONE, weights="random", image_size=224)  # random weights: the time is the same
    heavy_cache = EmbeddingCache(tmp / "cache-heavy")
    heavy_first, heavy_second = run("heavy-cold", heavy_cache, config=heavy)[0], run("heavy-warm", heavy_cache, config=heavy)[0]
    describe = lambda stages: ", ".join(f"{k} {v:.2f} s" for k, v in stages.items() if k != "cv")  # noqa: E731
    return Row(6, "retraining", f"{first:.1f} s then {second:.1f} s = {speedup:.1f} x faster", ">= 5 x faster", speedup >= 5,
               [f"{result.summary['crops']} crops, --cv 0, a fresh embedding cache; best of {repeats} pairs after a warm-up run; "
                f"backbone {json.loads((result.bundle / 'manifest.json').read_text())['backbone']['name']}",
                f"first: {describe(stages1)}", f"second: {describe(stages2)}",
                f"the features step (backbone, embedding) is {stages1['features'] / first * 100:.0f} % of the first run and "
                f"{stages1['features'] / stages2['features']:.1f} x faster from the cache; the model fit is the same work both times "
                f"(its folds on {cpu_count()} threads: fit {stages2['fit']:.2f} s, {one_fit:.2f} s on one thread)",
                f"cProfile of the second run on one thread ({one_thread:.1f} s): XGBoost's fits {xgboost / one_thread * 100:.0f} % "
                "(5 out-of-fold fits and 1 final fit per stack, 3 stacks)",
                f"with a backbone whose embedding costs more ({HEAVY_BACKBONE} at 224 px, once each): {heavy_first:.1f} s then "
                f"{heavy_second:.1f} s = {heavy_first / heavy_second:.1f} x faster"],
               {"first_s": first, "second_s": second, "speedup": speedup, "stages_first": stages1, "stages_second": stages2,
                "xgboost_share_one_thread": xgboost / one_thread, "fit_one_thread_s": one_fit, "heavy": {"backbone": HEAVY_BACKBONE, "first_s": heavy_first, "second_s": heavy_second}})


# --- the run ---------------------------------------------------------------------------------------
def machine(device: str) -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": device,
            "load_average_start": os.getloadavg()[0]}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def sizes(quick: bool) -> dict:
    if quick:
        return dict(crops=32, crop_repeats=2, ks=[1, 8], naive_ks=[1], sam_repeats=1,
                    automatic=[dict(points_per_side=4, points_per_batch=16), dict(mode="tiled", tile_size=256, points_per_side=2)],
                    images=20, memory=(10, 40), per_class=8, train_repeats=1)
    return dict(crops=256, crop_repeats=5, ks=[1, 8, 32], naive_ks=[1, 8], sam_repeats=2,
                automatic=[{}, dict(points_per_side=8), dict(points_per_side=8, points_per_batch=16), dict(points_per_side=4),
                           dict(mode="tiled", tile_size=256, points_per_side=4)],
                images=200, memory=(50, 1000), per_class=40, train_repeats=2)


def print_row(row: Row) -> None:
    print(f"\n[{row.number}] {row.name}: {row.figure}   target {row.target}   {row.verdict}", flush=True)
    for note in row.notes:
        print(f"    {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every measurement")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated measurement numbers")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "magnetic-tile")
    parser.add_argument("--proposer", default="classical", help="proposer of #1 and #4 (auto: the model's learned proposer when it carries one)")
    parser.add_argument("--memory-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        return memory_worker(args.model, *args.memory_worker, args.device)

    from defectkit.images import read_image
    from defectkit.threads import use_one_thread

    if args.device == "cpu":
        use_one_thread()
    only = {int(n) for n in args.only.split(",")}
    size = sizes(args.quick)
    info = machine(args.device)
    print(f"defectkit speed{' (--quick)' if args.quick else ''}: {info['date']}, {info['cpu']}, {info['cpus']} CPUs, "
          f"torch {info['torch']} on {info.get('gpu', 'cpu')} with {info['torch_threads']} thread(s); load average {info['load_average_start']:.1f}; "
          f"images from {source_root()}", flush=True)
    start = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        classifier = load_classifier(args.model, args.device, args.proposer) if only & {1, 4} else None
        crops_dir = crop_set(tmp, size["per_class"]) if only & {1, 6} else None
        sam_image = read_image(sorted(source_root().glob("MT_Blowhole/Imgs/*.jpg"))[0]) if only & {2, 3} else None
        steps = {
            1: lambda: crop_classification(classifier, crops_dir, size["crops"], size["crop_repeats"], args.device),
            4: lambda: whole_image(classifier, images(size["images"], tmp), tmp),
            5: lambda: memory(args.model, *size["memory"], args.device),
            6: lambda: retraining(crops_dir, tmp, size["train_repeats"]),
            2: lambda: prompted_sam2(sam_image, size["ks"], size["naive_ks"], size["sam_repeats"], args.device),
            3: lambda: automatic_sam2(sam_image, size["automatic"], args.device),
        }
        for number, step in steps.items():  # the cheap ones first
            if number in only:
                rows.append(step())
                print_row(rows[-1])
    rows.sort(key=lambda r: r.number)
    info["seconds"] = time.perf_counter() - start
    info["load_average_end"] = os.getloadavg()[0]
    print("\n| # | measurement | figure | target | result |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.number} | {row.name} | {row.figure} | {row.target} | {row.verdict} |")
    print(f"\n{info['date'][:10]}, {info['cpu']}, {info['cpus']} CPUs, torch threads {info['torch_threads']}, device {info.get('gpu', 'cpu')}; "
          f"{info['seconds'] / 60:.1f} min; load average {info['load_average_start']:.1f} at the start, {info['load_average_end']:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "quick": args.quick,
                                         "measurements": [{**vars(r), "verdict": r.verdict} for r in rows]}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
