#!/usr/bin/env bash
# Run the demo PTQ methods on the demo YOLOv6-N and print the leaderboard.
#   bash tools/demo_suite.sh [WORK_ROOT] [CONFIG_NAME_FILTER]
# e.g. bash tools/demo_suite.sh work_dirs/demo_board w8a8
# Each run writes WORK_ROOT/<config>/result.json; finished runs are skipped,
# so an interrupted suite resumes. The README's demo table comes from this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
root=${1:-work_dirs/demo_board}
filter=${2:-}
mkdir -p "$root"
configs=(
  minmax_w8a8 percentile_w8a8 mse_w8a8 kl_w8a8 kl_cfws_w8a8
  minmax_w4a8 percentile_w4a8 mse_w4a8 kl_w4a8 kl_cfws_w4a8
  adaround_w4a8 brecq_w4a8 qdrop_w4a8 detptq_w4a8 detptq_w8a8
  minmax_w4a4 adaround_w4a4 brecq_w4a4 qdrop_w4a4 detptq_w4a4
)
for name in "${configs[@]}"; do
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  out="$root/yolov6n_demo_$name"
  if [[ -f "$out/result.json" ]]; then echo "[suite] $name: done already"; continue; fi
  echo "[suite] $name"
  "$PY" tools/quantize.py "configs/demo/yolov6n_demo_$name.py" --work-dir "$out" > "$out.log" 2>&1 \
    || { echo "[suite] $name failed: see $out.log"; continue; }
done
"$PY" tools/leaderboard.py "$root" --md "$root/leaderboard.md" --csv "$root/leaderboard.csv"
