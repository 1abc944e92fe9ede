#!/usr/bin/env bash
# Grouped 5-fold cross-validation of the classifier on the real magnetic-tile crops, with every
# baseline scored on the same folds (each base learner alone, the flat stack, the hierarchy).
#
#   benchmarks/classifier_cv.sh [CROPS_DIR] [extra `defectkit evaluate` options...]
#
# Without CROPS_DIR it first extracts ../shared/datasets/magnetic-tile into a temporary folder.
# A fresh embedding cache is used, so the wall time includes embedding every crop.
# Report JSON and confusion PNGs go to $OUT (default /tmp/defectkit-bench/classifier-cv).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
TAXONOMY=configs/taxonomy/magnetic-tile.yaml
OUT=${OUT:-/tmp/defectkit-bench/classifier-cv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SECONDS=0
if [ $# -ge 1 ] && [ -d "$1" ]; then
  CROPS=$1
  shift
else
  CROPS=$WORK/crops
  "$BIN/defectkit" extract ../shared/datasets/magnetic-tile "$CROPS" --format masks --taxonomy "$TAXONOMY" -q > "$WORK/extract.log"
  echo "extracted $(wc -l < "$CROPS/manifest.jsonl") crops in ${SECONDS} s"
fi
mkdir -p "$OUT"
start=$SECONDS
DEFECTKIT_CACHE=$WORK/cache "$BIN/defectkit" evaluate "$CROPS" --taxonomy "$TAXONOMY" --cv 5 --baselines \
  --report "$OUT/report.json" --plots "$OUT/plots" -q "$@"
echo "evaluate wall time: $((SECONDS - start)) s (total with extraction: ${SECONDS} s) on $(nproc) cores"
