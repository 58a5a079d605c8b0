#!/usr/bin/env bash
# Every file of this folder, in the order it was made (LADIR_RUNS names the runs folder; one thread).
#   usage: run.sh train|curve|knobs|ar|short
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${LADIR_RUNS:-runs}
low="--knob,decoder=low_confidence"
case $1 in
  train)  # MGDM's recipe from the masked-diffusion base (600 steps), 3,200 SFT steps, batch 64
    ladir-bench train --method mdm --task countdown4 --run lc-mgdm --steps 3200 \
      --set method_options.recipe=mgdm --set method_options.gen_length=72 \
      --set train.checkpoint_every=800 --set train.keep_checkpoints=10
    mkdir -p "$here/logs"; cp "$root/lc-mgdm/mdm/log.jsonl" "$here/logs/lc-mgdm.mdm.jsonl" ;;
  curve)  # the intermediate checkpoints, each as it appeared (the final one is `knobs`' recipe row)
    "$here/curve.sh" lc-mgdm mdm 800 1600 2400 ;;
  knobs)  # the final checkpoint under each decoder setting (blocks of 8 target tokens: 9 blocks, 32 steps)
    "$here/knobs.sh" lc-mgdm recipe: "low-conf:$low" "low-conf-dual8:$low,--knob,cache=dual,--knob,block_length=8" \
      "low-conf-dual8-t0.9:$low,--knob,cache=dual,--knob,block_length=8,--knob,threshold=0.9" \
      "low-conf-dual8-t0.7:$low,--knob,cache=dual,--knob,block_length=8,--knob,threshold=0.7" \
      "low-conf-dual8-lastblock:$low,--knob,cache=dual,--knob,block_length=8,--knob,refresh=last_block" \
      "low-conf-dual8-lastblock-t0.7:$low,--knob,cache=dual,--knob,block_length=8,--knob,refresh=last_block,--knob,threshold=0.7"
    K=1 "$here/knobs.sh" lc-mgdm "greedy:$low,--temperature,0" "greedy-steps72:$low,--temperature,0,--steps,72"
    "$here/knobs.sh" lc-mgdm "low-conf-prefix8:$low,--knob,cache=prefix,--knob,block_length=8" \
      "low-conf-block8:$low,--knob,block_length=8" "easy-first-dual8:--knob,cache=dual,--knob,block_length=8"
    # fewer steps with the dual cache: 2 steps a block, then 1 (8 tokens a step)
    "$here/knobs.sh" lc-mgdm "low-conf-dual8-steps18:$low,--knob,cache=dual,--knob,block_length=8,--steps,18" \
      "low-conf-dual8-steps9:$low,--knob,cache=dual,--knob,block_length=8,--steps,9" ;;
  ar)  # AR-SFT beside it: the latest checkpoint of a 4,800-step AR-SFT run (AR_RUN, another runs folder),
       # copied as lc-ar-cSTEP holding only that checkpoint
    step=$(ls "$AR_RUN/sft/checkpoints" | sort | tail -1); step=$((10#${step#step-}))
    copy=lc-ar-c$step
    if [ ! -d "$root/$copy" ]; then
      cp -al "$AR_RUN" "$root/$copy.tmp"
      for later in "$root/$copy.tmp"/sft/checkpoints/step-*; do
        if [ "$((10#${later##*step-}))" -gt "$step" ]; then rm -rf "$later"; fi
      done
      rm -f "$root/$copy.tmp/sft/DONE"; mv "$root/$copy.tmp" "$root/$copy"
    fi
    "$here/knobs.sh" "$copy" ar: ;;
  short)  # LLaDA's and MGDM's recipes at 600 SFT steps (the shared budget), from the same masked-diffusion base
    ladir-bench train --method mdm --task countdown4 --run llada-md --set method_options.gen_length=72
    "$here/knobs.sh" llada-md recipe:
    ladir-bench train --method mdm --task countdown4 --run mgdm-md --set method_options.gen_length=72 \
      --set method_options.recipe=mgdm
    "$here/knobs.sh" mgdm-md "low-conf:--knob,decoder=low_confidence" ;;
esac
