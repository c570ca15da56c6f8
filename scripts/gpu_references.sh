#!/usr/bin/env bash
# The small-GPT reference runs for one GPU (issue: GPU reference runs that finish in minutes), one
# after another. Each run goes to $RUNS/<module> (default /tmp/gpu_runs, never $OUT: checkpoints
# stay behind); its log (ending in a line "rc=… wall=…s") and its metrics.json come back flat under
# $OUT as <module>.log and <module>_metrics.json (8 files for the four default runs). A run that
# passes $LIMIT_S seconds (default 480) is stopped and its log says so (rc=124).
#
#   OUT=/folder/copied/back scripts/gpu_references.sh [MODULE:PRESET ...]
#
# Then, here: python -m sinks_jax.results_tables --add <run folder> --source "H100 …" (or copy
# the metrics.json files under results/reference/<module>/<preset>/).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the folder that is copied back}
runs=${RUNS:-/tmp/gpu_runs}
limit=${LIMIT_S:-480}
export PYTHONUNBUFFERED=1
mkdir -p "$out" "$runs"
if [ $# -eq 0 ]; then
  set -- experiments.depth_design:gpu experiments.context_length_sweep:gpu \
    experiments.packing_sweep:gpu experiments.text_sink_search:paper
fi
for item in "$@"; do
  mod=${item%%:*}
  preset=${item#*:}
  name=${mod##*.}
  log="$out/$name.log"
  start=$(date +%s)
  timeout "$limit" python -m "$mod" --preset "$preset" --out "$runs/$name" >"$log" 2>&1
  rc=$?
  echo "rc=$rc wall=$(($(date +%s) - start))s module=$mod preset=$preset" >>"$log"
  if [ -f "$runs/$name/metrics.json" ]; then
    cp "$runs/$name/metrics.json" "$out/${name}_metrics.json"
  fi
done
