"""Extract the full magnetic-tile data set and check its coverage: one command, figures printed.

    .venv/bin/python benchmarks/extract.py [--src ../shared/datasets/magnetic-tile] [--out /tmp/mt]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from defectkit.jobs.extract import ExtractOptions, extract
from defectkit.taxonomy import Taxonomy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "datasets" / "magnetic-tile")
    parser.add_argument("--out", type=Path, default=Path("/tmp/defectkit-bench/mt-crops"))
    args = parser.parse_args()
    if not args.src.is_dir():
        raise SystemExit(f"data set not found at {args.src}")
    taxonomy = Taxonomy.load(ROOT / "configs" / "taxonomy" / "magnetic-tile.yaml")
    start = time.perf_counter()
    summary = extract(args.src, args.out, taxonomy, ExtractOptions(), progress=False)
    seconds = time.perf_counter() - start
    images = [p for p in args.src.rglob("*.jpg")]
    defect_images = {str(p) for p in images if "MT_Free" not in p.parts}
    from defectkit.data.manifest import read_manifest

    with_crop = {r["image"] for r in read_manifest(args.out) if r["category"] != "background"}
    per_class = Counter(Path(p).parts[-3] for p in defect_images - with_crop)
    print(f"images read              {summary.images}")
    print(f"defect images            {len(defect_images)}")
    print(f"  with >= 1 defect crop  {len(with_crop & defect_images)}")
    print(f"  without (empty masks)  {len(summary.empty)}  {dict(per_class)}")
    print(f"files skipped            {len(summary.skipped)}")
    for (category, subtype), count in sorted(summary.crops.items()):
        print(f"crops {category:>10}/{subtype:<10} {count}")
    print(f"wall time                {seconds:.1f} s")


if __name__ == "__main__":
    main()
