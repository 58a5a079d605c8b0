#!/usr/bin/env bash
# Evaluations of a trained run on the first 200 Countdown-4 test problems, seed 0, temperature 1, each
# written as NAME.<evaluation>SUFFIX.{metrics,manifest}.json; NAME is the run name, or RUN.CHECKPOINT
# for an evaluation of an earlier phase (e.g. g2-ctx-noq.stage1), so every file's name starts with its run's.
#   final_eval.sh main  NAME SUFFIX [EVAL ARGS]  k = 100                          -> here
#   final_eval.sh steps NAME SUFFIX [EVAL ARGS]  k = 10 at each of $STEPS (1 5 10 30) Euler steps
#                                                 -> ../ladir-steps-countdown4/NAME.k10.stepsS SUFFIX
#   final_eval.sh gamma NAME SUFFIX [EVAL ARGS]  k = 10 at gamma_max 0.3, 0.5, 1.0
#                                                 -> ../ladir-guidance-countdown4/NAME.k10.gammaG SUFFIX
# SUFFIX names what EVAL ARGS change ('' for none): .reencode for --knob reencode=true, .steps1.reencode
# for --steps 1 --knob reencode=true. Each evaluation's manifest (code revision, checkpoint, problem set,
# packages, checker) is copied from the run's results folder beside its metrics.
set -euo pipefail
what=$1; name=$2; suffix=$3; shift 3; extra=("$@"); run=${name%%.*}
here=$(cd "$(dirname "$0")" && pwd); root=${LADIR_RUNS:-runs}

evaluate() {  # evaluate OUT_FOLDER OUT_STEM EVAL_ARGS...
  local folder=$1 out=$2; shift 2
  mkdir -p "$folder"
  ladir-bench eval --run "$run" --limit 200 --json "$@" "${extra[@]}" > "$folder/$out.metrics.json.tmp"
  mv "$folder/$out.metrics.json.tmp" "$folder/$out.metrics.json"
  # the manifest of the evaluation just finished: the newest under the run's results
  cp "$(ls -t "$root/$run"/results/*/*/manifest.json | head -1)" "$folder/$out.manifest.json"
}

case $what in
  main)  evaluate "$here" "$name.k100$suffix" --k 100 ;;
  steps) for s in ${STEPS:-1 5 10 30}; do
           evaluate "$here/../ladir-steps-countdown4" "$name.k10.steps$s$suffix" --k 10 --steps "$s"; done ;;
  gamma) for g in 0.3 0.5 1.0; do
           evaluate "$here/../ladir-guidance-countdown4" "$name.k10.gamma$g$suffix" --k 10 --knob gamma_max="$g"; done ;;
  *) echo "usage: final_eval.sh main|steps|gamma NAME SUFFIX [EVAL ARGS]" >&2; exit 2 ;;
esac
