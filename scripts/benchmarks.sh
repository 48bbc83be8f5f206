#!/usr/bin/env bash
# The performance figures in README.md: LiteRT variants vs Keras for B0 and B3 at native size,
# then the daemon against bare invoke on the B3 int8 bundle. Writes runs/bench-*.md and .json.
# Usage: scripts/benchmarks.sh ../shared/data [runs]
set -euo pipefail
DATA=${1:?usage: scripts/benchmarks.sh ../shared/data [runs]}
RUNS=${2:-runs}
mkdir -p "$RUNS/bench-models"
python benchmarks/bench_quantization.py --data "$DATA/taleqani-all" \
  --models efficientnet-b0,efficientnet-b3 --threads 2 --keep "$RUNS/bench-models" \
  --json "$RUNS/bench-quantization.json" | tee "$RUNS/bench-quantization.md"
python benchmarks/bench_daemon.py --bundle "$RUNS/bench-models/efficientnet-b3-int8" \
  --frames edge/demo/frames --count 300 --threads 2 \
  --json "$RUNS/bench-daemon.json" | tee "$RUNS/bench-daemon.md"
