#!/usr/bin/env bash
# The ablation of the LaDiR fixes on Countdown-4, tiny preset, this 2-core CPU (see README.md here).
# Every run shares the base LM (runs/_base) and the VAE of `cd4-main`: the VAE phase does not depend
# on any reasoner option, so its finished directory is copied instead of retrained (same seed, same
# settings, same weights). Stage-2 variants likewise copy the stage-1 directory they start from.
#   usage: fix_ladder.sh RUN FROM_RUN PHASES_TO_COPY "method_options as YAML flow mapping"
set -euo pipefail
run=$1; from=$2; copy=$3; options=$4
root=${LADIR_RUNS:-runs}
mkdir -p "$root/$run"
for phase in $copy; do
  [ -d "$root/$run/$phase" ] || cp -r "$root/$from/$phase" "$root/$run/$phase"
done
ladir-bench train --method ladir --task countdown4 --run "$run" --set "method_options=$options"
ladir-bench probe --run "$run" --checkpoint stage1 --limit 200 --json > /dev/null
ladir-bench probe --run "$run" --checkpoint stage2 --limit 200 --json > /dev/null
