#!/usr/bin/env bash
# Evaluation on 200 Countdown-4 test problems (countdown4/test/0..199), seed 0, temperature 1.
#   final_eval.sh main RUN NAME   k = 100                                  -> NAME.k100.{metrics,manifest}.json
#   final_eval.sh steps RUN NAME  k = 10 at 1, 5, 10, 30 Euler steps       -> NAME.k10.stepsS.{metrics,manifest}.json
#   final_eval.sh gamma RUN NAME  k = 10 at gamma_max 0.3, 0.5, 1.0        -> NAME.k10.gammaG.{metrics,manifest}.json
# Arguments after NAME go to every `ladir-bench eval` (e.g. --knob reencode=true).
# Each evaluation's manifest (code revision, checkpoint, problem set, packages, checker) is copied
# from the run's results folder beside its metrics.
set -euo pipefail
what=$1; run=$2; name=$3; shift 3; extra=("$@"); here=$(dirname "$0"); root=${LADIR_RUNS:-runs}

evaluate() {  # evaluate OUT_STEM EVAL_ARGS...
  local out=$1; shift
  ladir-bench eval --run "$run" --limit 200 --json "$@" "${extra[@]}" > "$here/$out.metrics.json.tmp"
  mv "$here/$out.metrics.json.tmp" "$here/$out.metrics.json"
  # the manifest of the evaluation just finished: the newest under the run's results
  cp "$(ls -t "$root/$run"/results/*/*/manifest.json | head -1)" "$here/$out.manifest.json"
}

case $what in
  main)  evaluate "$name.k100" --k 100 ;;
  steps) for s in 1 5 10 30; do evaluate "$name.k10.steps$s" --k 10 --steps "$s"; done ;;
  gamma) for g in 0.3 0.5 1.0; do evaluate "$name.k10.gamma$g" --k 10 --knob gamma_max="$g"; done ;;
esac
