#!/usr/bin/env bash
# A learning curve: each checkpoint of a training run evaluated as it appears. For every STEP, a
# hardlinked copy of RUN holding only checkpoint STEP (`cp -al`, later checkpoints removed, so the
# copy's final checkpoint is STEP) is evaluated at k = 10 on the first 100 test problems, seed 0.
# Writes configs/RUN-cSTEP.yaml and RUN-cSTEP.k10.{metrics,manifest,copy-arithmetic}.json here.
#   usage: curve.sh RUN PHASE STEP [STEP ...]      e.g. curve.sh lc-mgdm mdm 800 1600 2400 3200
# EVAL_ARGS (environment) adds eval options.
set -euo pipefail
run=$1; phase=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
root=${LADIR_RUNS:-runs}
for step in "$@"; do
  checkpoint=$(printf "%s/%s/%s/checkpoints/step-%07d" "$root" "$run" "$phase" "$step")
  until [ -f "$checkpoint/trainer_state.pt" ]; do sleep 30; done
  copy="$run-c$step"
  if [ ! -d "$root/$copy" ]; then
    cp -al "$root/$run" "$root/$copy.tmp"
    for later in "$root/$copy.tmp/$phase"/checkpoints/step-*; do
      if [ "$((10#${later##*step-}))" -gt "$step" ]; then rm -rf "$later"; fi
    done
    rm -f "$root/$copy.tmp/$phase/DONE"
    mv "$root/$copy.tmp" "$root/$copy"
  fi
  ladir-bench eval --run "$copy" --k 10 --limit 100 ${EVAL_ARGS:-} --json > "$here/$copy.k10.metrics.json.tmp"
  mv "$here/$copy.k10.metrics.json.tmp" "$here/$copy.k10.metrics.json"
  results=$(dirname "$(ls -t "$root/$copy"/results/*/*/manifest.json | head -1)")
  cp "$results/manifest.json" "$here/$copy.k10.manifest.json"
  python "$here/copy_and_arithmetic.py" "$results/samples.jsonl" > "$here/$copy.k10.copy-arithmetic.json"
  mkdir -p "$here/configs"
  cp "$root/$copy/config.yaml" "$here/configs/$copy.yaml"
done
