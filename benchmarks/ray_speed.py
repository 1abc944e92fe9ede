"""Throughput of classify on Ray against the local path, on magnetic-tile images (the shipped model,
the classical proposer): images/s for the local run and for --engine ray with 1 and 2 workers of one
CPU each (``--run 1:2``: one worker of two CPUs), that Ray's files equal the local run's, and the
per-image time Ray adds, and the scaling efficiency of more workers against one. Each is also run on the first fifth of the
images: the difference gives the steady rate, without the start-up (of Ray, its actors, the model).
Last, the ceiling of one worker of one CPU: what an actor does, in this process without Ray (read,
propose, embed and classify on one thread, one torch thread), as a rate and against local's steady
rate, since a local run overlaps proposing with classifying on two threads.

    .venv/bin/python benchmarks/ray_speed.py [--images 200] [--run 1:1 --run 2:1]  (workers:CPUs each)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "magnetic-tile"


def run(label: str, images: Path, out: Path, extra: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "defectkit", "classify", str(images), "-m", str(ROOT / "models" / "magnetic-tile"),
               "-o", str(out), "-p", "classical", "-q", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(done.stdout + done.stderr)
    rate = [line for line in done.stdout.splitlines() if "img/s" in line]
    print(f"{label:<22} {seconds:7.1f} s wall (model loading and Ray start included); {rate[-1] if rate else ''}", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--run", action="append", metavar="WORKERS:CPUS", help="a Ray run: workers and CPUs per worker")
    parser.add_argument("--work", type=Path, default=Path("/tmp/defectkit-bench/ray"))
    args = parser.parse_args()
    found = sorted(DATA.rglob("*.jpg"))
    chosen = found[:: max(1, len(found) // args.images)][: args.images]
    few = max(1, args.images // 5)
    folders = {}
    for name, paths in (("images", chosen), ("first-fifth", chosen[:few])):
        folders[name] = args.work / name
        shutil.rmtree(folders[name], ignore_errors=True)
        folders[name].mkdir(parents=True)
        for path in paths:
            (folders[name] / f"{path.parent.parent.name}-{path.name}").symlink_to(path)
    files = lambda out: {p.name: p.read_bytes() for p in out.iterdir() if p.name not in (".defectkit.lock", "report.html")}  # noqa: E731

    def measure(label: str, out: Path, extra: list[str]) -> tuple[float, float]:
        """Wall seconds for all the images, and the steady rate: the images past the first fifth over
        the seconds they added (start-up of Ray, of the actors and of the model cancels out)."""
        seconds = run(label, folders["images"], out, extra)
        start = run(f"{label}, first {few}", folders["first-fifth"], out.with_name(out.name + "-fifth"), extra)
        return seconds, (args.images - few) / max(seconds - start, 1e-9)

    local, local_rate = measure("local", args.work / "local", [])
    print(f"  steady: {local_rate:.1f} img/s", flush=True)
    one_worker = {}  # steady rate of one worker, by its CPUs
    for setting in args.run or ["1:1", "2:1"]:
        workers, cpus = (int(v) for v in setting.split(":"))
        out = args.work / f"ray-{workers}x{cpus}"
        seconds, rate = measure(f"ray, {workers} worker(s) x {cpus} CPU", out,
                                ["--engine", "ray", "--workers", str(workers), "--cpus-per-worker", str(cpus)])
        same = files(out) == files(args.work / "local")
        print(f"  files equal to the local run's: {same}; against local: {local / seconds:.2f}x throughput, "
              f"{(seconds - local) / args.images * 1000:+.0f} ms per image; steady: {rate:.1f} img/s, "
              f"{rate / local_rate:.2f}x local's steady rate", flush=True)
        if workers == 1:
            one_worker[cpus] = rate
        elif cpus in one_worker:
            print(f"  scaling efficiency (steady rate / ({workers} x one worker's)): {rate / (workers * one_worker[cpus]):.2f}; "
                  f"the actors ask for {workers * cpus} of this machine's {os.cpu_count()} cores, the driver runs beside them", flush=True)
    ceiling = one_thread_rate(sorted(folders["images"].iterdir()))
    print(f"one worker's ceiling (an actor's work on one thread, no Ray): {ceiling:.1f} img/s, "
          f"{ceiling / local_rate:.2f}x local's steady rate", flush=True)


def one_thread_rate(paths: list[Path]) -> float:
    from defectkit.pipeline import DefectClassifier
    from defectkit.threads import use_one_thread

    use_one_thread()  # as an actor of one CPU
    classifier = DefectClassifier.load(ROOT / "models" / "magnetic-tile", "classical")
    for _ in classifier.stream(paths[:32], workers=0):  # warm-up
        pass
    start = time.perf_counter()
    done = sum(1 for _ in classifier.stream(paths, workers=0))
    return done / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
