#!/usr/bin/env bash
# The training runs behind docs/results.md, in order. Each is skipped when its report exists,
# so an interrupted sequence resumes. Usage: scripts/experiments.sh SHARED_DATA_DIR [RUNS_DIR]
set -euo pipefail
DATA=${1:?usage: scripts/experiments.sh ../shared/data [runs]}
RUNS=${2:-runs}
mkdir -p "$RUNS"
WEIGHTS=${LITE0_WEIGHTS:-$HOME/.cache/blastscope/weights/efficientnet-lite0-imagenet.weights.h5}
[ -f "$WEIGHTS" ] || trainer import-weights efficientnet-lite0 --out "$WEIGHTS"

split() {  # name data task/layout args...
  local out="$RUNS/$1-split.json"; shift
  [ -f "$out" ] || trainer split --split-fractions 0.7 0.1 0.2 --seed 0 "$@" --out "$out"
}
fit() {  # run-name split-name args...
  local name=$1 splitname=$2; shift 2
  [ -f "$RUNS/$name/report.json" ] && { echo "== $name: done"; return; }
  echo "== $name"
  trainer fit --split-file "$RUNS/$splitname-split.json" --cache memory --batch-size 32 \
    --bootstrap 300 --out "$RUNS/$name" "$@" > "$RUNS/$name.log" 2>&1
}

T="$DATA/taleqani-all"
split taleqani-subtypes --data "$T" --task subtypes
split taleqani-binary --data "$T" --task binary
split malaria --data "$DATA/malaria-nih-50" --layout malaria

LITE=(--model efficientnet-lite0 --image-size 128)
fit lite0-transfer-dwell-subtypes taleqani-subtypes --data "$T" --task subtypes "${LITE[@]}" \
  --weights "$WEIGHTS" --head-epochs 3 --fine-tune-epochs 5 --lr-schedule dwell
fit lite0-transfer-fixed-subtypes taleqani-subtypes --data "$T" --task subtypes "${LITE[@]}" \
  --weights "$WEIGHTS" --head-epochs 3 --fine-tune-epochs 5 --lr-schedule fixed
# A second training seed on the same split (fixed vs DWELL).
for schedule in dwell fixed; do
  fit "lite0-transfer-$schedule-subtypes-seed1" taleqani-subtypes --data "$T" --task subtypes \
    "${LITE[@]}" --weights "$WEIGHTS" --head-epochs 3 --fine-tune-epochs 5 \
    --lr-schedule "$schedule" --seed 1
done
fit lite0-transfer-dwell-binary taleqani-binary --data "$T" --task binary "${LITE[@]}" \
  --weights "$WEIGHTS" --head-epochs 3 --fine-tune-epochs 5 --lr-schedule dwell
fit lite0-transfer-dwell-subtypes-reinhard taleqani-subtypes --data "$T" --task subtypes \
  "${LITE[@]}" --weights "$WEIGHTS" --head-epochs 3 --fine-tune-epochs 5 --lr-schedule dwell \
  --colour-normalisation reinhard
fit lite0-scratch-dwell-subtypes taleqani-subtypes --data "$T" --task subtypes "${LITE[@]}" \
  --weights none --fine-tune-epochs 6 --lr-schedule dwell
fit lite0-transfer-dwell-malaria malaria --data "$DATA/malaria-nih-50" --layout malaria \
  --model efficientnet-lite0 --image-size 64 --weights "$WEIGHTS" --head-epochs 2 \
  --fine-tune-epochs 2 --lr-schedule dwell
