#!/usr/bin/env bash
# The small-GPT reference runs for one GPU, one after another. Each run goes to $RUNS/<module>
# (default /tmp/gpu_runs: checkpoints stay behind); back under $OUT, flat, come <module>.log (ending
# in "rc=… wall=…s") and, for a run that completed, <module>.tar.gz (run.json, metrics.json,
# report.md, config.json and the PNGs; run.json lets `results_tables --add` check the run was
# complete): two files a module, 8 for four. A run that passes $LIMIT_S seconds (default 240) is
# stopped (rc=124; whatever it finished stays in $RUNS). The script exits with the worst rc. OUT
# must be set (not empty, not /) and every argument must be MODULE:PRESET, else exit 2 at once.
#
#   OUT=/folder/copied/back scripts/gpu_references.sh [MODULE:PRESET ...]
#
# Device budget: one call runs at most 10 minutes and a session has 15 in all, so give each call
# one or two modules (the default list is all four, for a machine without those limits). Then,
# here: unpack a tarball into a folder and `python -m sinks_jax.results_tables --add FOLDER
# --source "H100, …"` puts it under results/reference/<module>/<preset>/.
set -euo pipefail
# OUT first: an empty one would put every log and tarball at the filesystem root.
if [ -z "${OUT:-}" ]; then
  echo "error: set OUT to the folder that is copied back (e.g. OUT=\$OUT on the device)" >&2
  exit 2
fi
out=$(realpath -m "$OUT")
if [ -z "$out" ] || [ "$out" = / ]; then
  echo "error: OUT=$OUT is the filesystem root; name a folder of its own" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
runs=${RUNS:-/tmp/gpu_runs}
limit=${LIMIT_S:-240}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if [ $# -eq 0 ]; then
  set -- experiments.depth_design:gpu experiments.context_length_sweep:gpu \
    experiments.packing_sweep:gpu experiments.text_sink_search:paper
fi
for item in "$@"; do # every argument checked before anything runs
  if ! [[ $item =~ ^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z0-9_-]+$ ]]; then
    echo "error: $item is not MODULE:PRESET (e.g. experiments.depth_design:gpu)" >&2
    exit 2
  fi
done
mkdir -p "$out" "$runs"
worst=0
for item in "$@"; do
  mod=${item%%:*}
  preset=${item#*:}
  name=${mod##*.}
  log="$out/$name.log"
  start=$(date +%s)
  rc=0
  timeout "$limit" "$python" -m "$mod" --preset "$preset" --out "$runs/$name" >"$log" 2>&1 || rc=$?
  echo "rc=$rc wall=$(($(date +%s) - start))s module=$mod preset=$preset" >>"$log"
  if [ "$rc" -gt "$worst" ]; then worst=$rc; fi
  if [ "$rc" -ne 0 ]; then
    continue # only a completed run is packed: what a failed one left in $RUNS may be older
  fi
  files=$(cd "$runs/$name" && ls run.json metrics.json report.md config.json ./*.png 2>/dev/null) ||
    true # report.md or figures may be missing
  # shellcheck disable=SC2086  # the names are the run's own, without spaces
  if ! (cd "$runs/$name" && tar -czf "$out/$name.tar.gz" $files); then
    echo "rc=1 packing $runs/$name failed" >>"$log"
    if [ "$worst" -lt 1 ]; then worst=1; fi
  fi
done
exit "$worst"
