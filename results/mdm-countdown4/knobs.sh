#!/usr/bin/env bash
# The decoding knobs at one run's final checkpoint: k = $K (default 10) on the first 100 test problems, seed 0,
# one evaluation per LABEL:OPTIONS (OPTIONS: eval options, commas for spaces). Writes
# RUN.kK.LABEL.{metrics,manifest,copy-arithmetic}.json here.
#   usage: knobs.sh RUN LABEL:OPTIONS [LABEL:OPTIONS ...]
#   e.g.   knobs.sh lc-mgdm recipe: dual8:--knob,decoder=low_confidence,--knob,cache=dual,--knob,block_length=8
set -euo pipefail
run=$1; shift
k=${K:-10}
here=$(cd "$(dirname "$0")" && pwd)
root=${LADIR_RUNS:-runs}
for spec in "$@"; do
  label=${spec%%:*}
  IFS=, read -r -a options <<<"${spec#*:}"
  out="$here/$run.k$k.$label.metrics.json"
  [ -f "$out" ] && continue
  ladir-bench eval --run "$run" --k "$k" --limit 100 "${options[@]}" --json > "$out.tmp"
  mv "$out.tmp" "$out"
  results=$(dirname "$(ls -t "$root/$run"/results/*/*/manifest.json | head -1)")
  cp "$results/manifest.json" "$here/$run.k$k.$label.manifest.json"
  python "$here/copy_and_arithmetic.py" "$results/samples.jsonl" > "$here/$run.k$k.$label.copy-arithmetic.json"
  mkdir -p "$here/configs"
  cp "$root/$run/config.yaml" "$here/configs/$run.yaml"
done
