#!/usr/bin/env bash
# Fine-tune SAM2 on the magnetic-tile masks on a CUDA machine, then measure what it gained:
# base vs fine-tuned on the held-out images, and a data study (10/25/50/100 % of the training images).
#
#   benchmarks/finetune_sam2_cuda.sh [DATASET]
#
# Needs a GPU and a SAM2 checkpoint from Meta's release (https://github.com/facebookresearch/sam2,
# "Download Checkpoints"), e.g. checkpoints/sam2.1_hiera_tiny.pt. Settings come from the environment:
#   SAM2_CONFIG      sam2.1_hiera_t            (sam2.1_hiera_s | sam2.1_hiera_b+ | sam2.1_hiera_l)
#   SAM2_CHECKPOINT  checkpoints/sam2.1_hiera_tiny.pt (the file that matches SAM2_CONFIG)
#   TAXONOMY         configs/taxonomy/magnetic-tile.yaml
#   EPOCHS           20    epochs of the main run
#   FRACTION_EPOCHS  10    epochs of each run of the data study (0: skip the study)
#   FRACTIONS        0.1,0.25,0.5,1
#   BATCH_SIZE       8     images per step (each with all its regions)
#   LR               1e-4
#   AMG_POINTS       32    automatic mask generator grid (points per side) in the evaluation
#   EXTRA            ""    more finetune-sam2 options, e.g. "--train-image-encoder"
#   OUT              out/sam2-cuda   logs, tables and the plot
# Prints the loss per epoch, the side-by-side evaluation and the data-study table; writes
# checkpoints/mt-<config>.pt (a stock SAM2 checkpoint: `classify --proposer sam2 --sam2-checkpoint` takes it).
set -euo pipefail
cd "$(dirname "$0")/.."

DATASET=${1:-${DATASET:-../shared/datasets/magnetic-tile}}
SAM2_CONFIG=${SAM2_CONFIG:-sam2.1_hiera_t}
declare -A FILES=([sam2.1_hiera_t]=sam2.1_hiera_tiny.pt [sam2.1_hiera_s]=sam2.1_hiera_small.pt
                  [sam2.1_hiera_b+]=sam2.1_hiera_base_plus.pt [sam2.1_hiera_l]=sam2.1_hiera_large.pt)
SAM2_CHECKPOINT=${SAM2_CHECKPOINT:-checkpoints/${FILES[$SAM2_CONFIG]:-$SAM2_CONFIG.pt}}
TAXONOMY=${TAXONOMY:-configs/taxonomy/magnetic-tile.yaml}
EPOCHS=${EPOCHS:-20}
FRACTION_EPOCHS=${FRACTION_EPOCHS:-10}
FRACTIONS=${FRACTIONS:-0.1,0.25,0.5,1}
BATCH_SIZE=${BATCH_SIZE:-8}
LR=${LR:-1e-4}
AMG_POINTS=${AMG_POINTS:-32}
EXTRA=${EXTRA:-}
OUT=${OUT:-out/sam2-cuda}
TUNED=${TUNED:-checkpoints/mt-$SAM2_CONFIG.pt}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DK="$PYTHON -m defectkit.cli"

"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for a GPU machine (on a CPU, add --image-size 256 and few epochs to the commands in docs/finetune-sam2.md)')"
[ -f "$SAM2_CHECKPOINT" ] || { echo "no SAM2 checkpoint at $SAM2_CHECKPOINT: download ${FILES[$SAM2_CONFIG]:-the file for $SAM2_CONFIG} from Meta's SAM2 release into checkpoints/, or set SAM2_CHECKPOINT" >&2; exit 2; }
[ -e "$DATASET" ] || { echo "data set not found: $DATASET" >&2; exit 2; }
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$OUT/device.txt"

echo "== fine-tuning $SAM2_CONFIG from $SAM2_CHECKPOINT on $DATASET ($EPOCHS epochs)"
start=$(date +%s)
# shellcheck disable=SC2086
$DK finetune-sam2 "$DATASET" --sam2-config "$SAM2_CONFIG" --sam2-checkpoint "$SAM2_CHECKPOINT" --out "$TUNED" \
    --taxonomy "$TAXONOMY" --epochs "$EPOCHS" --batch-size "$BATCH_SIZE" --lr "$LR" \
    --amg-points-per-side "$AMG_POINTS" --quiet $EXTRA 2>&1 | grep -v -e FutureWarning -e "warnings.warn" | tee "$OUT/finetune.txt"
echo "fine-tuning and evaluation: $(( $(date +%s) - start )) s" | tee -a "$OUT/finetune.txt"

if [ "$FRACTION_EPOCHS" -gt 0 ]; then
    echo "== data study: $FRACTIONS of the training images, $FRACTION_EPOCHS epochs each"
    start=$(date +%s)
    $DK evaluate-sam2 "$DATASET" --sam2-config "$SAM2_CONFIG" --sam2-checkpoint "$SAM2_CHECKPOINT" --compare "$TUNED" \
        --taxonomy "$TAXONOMY" --fractions "$FRACTIONS" --epochs "$FRACTION_EPOCHS" --batch-size "$BATCH_SIZE" --lr "$LR" \
        --amg-points-per-side "$AMG_POINTS" --out-dir "$OUT/study" --quiet 2>&1 | grep -v -e FutureWarning -e "warnings.warn" | tee "$OUT/study.txt"
    echo "data study: $(( $(date +%s) - start )) s" | tee -a "$OUT/study.txt"
fi
echo "logs, table and plot in $OUT; fine-tuned checkpoint: $TUNED"
