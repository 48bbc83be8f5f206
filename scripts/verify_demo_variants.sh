#!/usr/bin/env bash
# Export the demo model in several forms and run the int8-vs-float gate on the held-out test
# split; writes runs/verify-<name>.json for scripts/results.py. "-noprep" variants convert the
# model as trained (--no-bias-correction); the others use the default int8 preparation (input
# folding + bias correction). Usage: scripts/verify_demo_variants.sh [runs]
set -euo pipefail
RUNS=${1:-runs}
M4="$RUNS/lite0-transfer-dwell-subtypes"
M2="$RUNS/lite0-transfer-dwell-binary"
GOLDEN=edge/demo/frames
one() {  # name model quantize form calibration-count [export args...]
  local name=$1 model=$2 quant=$3 form=$4 count=$5
  shift 5
  local out="$RUNS/bundles/$name"
  [ -f "$RUNS/verify-$name.json" ] && return
  converters export "$model/model.keras" --quantize "$quant" --form "$form" \
    --calibration-count "$count" --golden "$GOLDEN" --golden-count 4 --out "$out" --overwrite "$@"
  # The validation split first (not recorded in the manifest), then the test split (recorded).
  converters verify "$out" --split-file "$model/split.json" --subset val --no-record --json \
    > "$RUNS/verify-val-$name.json" || true
  converters verify "$out" --split-file "$model/split.json" --json > "$RUNS/verify-$name.json" || true
}
one subtypes-float16 "$M4" float16 classifier 300
one subtypes-int8-cal300-noprep "$M4" int8 classifier 300 --no-bias-correction
one subtypes-int8-cal2272-noprep "$M4" int8 classifier 2272 --no-bias-correction
one subtypes-int8-finetunable-cal1000-noprep "$M4" int8 backbone_head 1000 --no-bias-correction
one binary-int8-cal1000-noprep "$M2" int8 classifier 1000 --no-bias-correction
one subtypes-int8-prep-cal300 "$M4" int8 classifier 300
one subtypes-int8-prep-cal2272 "$M4" int8 classifier 2272
one subtypes-int8-prep-finetunable-cal300 "$M4" int8 backbone_head 300
one binary-int8-prep-cal300 "$M2" int8 classifier 300
