#!/usr/bin/env bash
# One row of the baselines table: train METHOD on Countdown-4 at the tiny preset (the shared base LM in
# runs/_base, the shared 600-step budget) as run RUN, then k = 100 samples on the first 200 test problems
# at temperature 1, seed 0. Writes RUN.k100.{metrics,manifest}.json and configs/RUN.yaml here.
#   usage: run.sh METHOD RUN [--set key=value ...]
# EVAL_ARGS (environment) adds eval options, e.g. EVAL_ARGS="--steps 24" for a diffusion method.
set -euo pipefail
method=$1; run=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
root=${LADIR_RUNS:-runs}
ladir-bench train --method "$method" --task countdown4 --run "$run" "$@"
ladir-bench eval --run "$run" --k 100 --limit 200 ${EVAL_ARGS:-} --json > "$here/$run.k100.metrics.json.tmp"
mv "$here/$run.k100.metrics.json.tmp" "$here/$run.k100.metrics.json"
# the manifest of the evaluation just finished: the newest under the run's results
cp "$(ls -t "$root/$run"/results/*/*/manifest.json | head -1)" "$here/$run.k100.manifest.json"
mkdir -p "$here/configs"
cp "$root/$run/config.yaml" "$here/configs/$run.yaml"
