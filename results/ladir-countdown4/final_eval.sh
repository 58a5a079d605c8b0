#!/usr/bin/env bash
# Evaluation on 200 Countdown-4 test problems (countdown4/test/0..199), seed 0, temperature 1.
#   final_eval.sh main RUN NAME   k = 100                                  -> NAME.k100.metrics.json
#   final_eval.sh steps RUN NAME  k = 10 at 1, 5, 10, 30 Euler steps       -> NAME.k10.stepsS.metrics.json
#   final_eval.sh gamma RUN NAME  k = 10 at gamma_max 0.3, 0.5, 1.0        -> NAME.k10.gammaG.metrics.json
set -euo pipefail
what=$1; run=$2; name=$3; here=$(dirname "$0")
case $what in
  main)  ladir-bench eval --run "$run" --k 100 --limit 200 --json > "$here/$name.k100.metrics.json" ;;
  steps) for s in 1 5 10 30; do
           ladir-bench eval --run "$run" --k 10 --limit 200 --steps "$s" --json > "$here/$name.k10.steps$s.metrics.json"
         done ;;
  gamma) for g in 0.3 0.5 1.0; do
           ladir-bench eval --run "$run" --k 10 --limit 200 --knob gamma_max="$g" --json > "$here/$name.k10.gamma$g.metrics.json"
         done ;;
esac
