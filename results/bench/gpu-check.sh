#!/usr/bin/env bash
# The GPU path in one run, for a machine with an NVIDIA GPU (this project had none when it was written):
#   1. ladir-bench selfcheck --device cuda   every method, bf16 + fp16 autocast, gradient checkpointing,
#                                            LoRA, NCCL (2+ GPUs), FSDP2, vLLM, a short bench
#   2. ladir-bench bench --device cuda       the throughput figures (tiny preset, median of 3)
#   3. pytest: the real-vLLM test (tests/test_vllm_real.py) and the CUDA cases of tests/test_ladir.py
# Reports, beside this script:
#   gpu-selfcheck.json   selfcheck's JSON report (gpu-selfcheck.txt: its table)
#   cuda-tiny.json       bench's report (the figures, their details, the environment)
#   gpu-tests.txt        pytest's output
#   gpu-check.log        everything else: nvidia-smi, versions, progress, each step's exit code
# Run from anywhere, with the project's venv active; for the LoRA and vLLM checks first:
#   pip install -e '.[peft,vllm]'
# Exit code: 0 when every step passed, else 1 (every step runs regardless). Each step is capped at
# STEP_TIMEOUT seconds (default 900).
set -u -o pipefail
cd "$(dirname "$0")/../.."
out=results/bench
log="$out/gpu-check.log"
timeout_s="${STEP_TIMEOUT:-900}"
export LADIR_NO_PROGRESS=1
runs="$(mktemp -d "${TMPDIR:-/tmp}/ladir-gpu-check.XXXXXX")"
failed=0

step() {  # step NAME COMMAND...: run it, log its exit code, remember a failure
    local name="$1"; shift
    echo "== $name: $*" | tee -a "$log"
    timeout "$timeout_s" "$@"
    local code=$?
    echo "== $name: exit $code" | tee -a "$log"
    [ "$code" -eq 0 ] || failed=1
}

: > "$log"
{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    git rev-parse HEAD 2>/dev/null && git status --short --untracked-files=no
    nvidia-smi
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
    python -c "import vllm; print('vllm', vllm.__version__)" 2>/dev/null || echo "vllm: not installed"
    python -c "import peft; print('peft', peft.__version__)" 2>/dev/null || echo "peft: not installed"
} >> "$log" 2>&1

# 1. selfcheck: the JSON report to a file, progress lines to the log; the runs kept for a failed check's log
step selfcheck sh -c "ladir-bench selfcheck --device cuda --json --runs-dir '$runs' > '$out/gpu-selfcheck.json' 2>> '$log'"
python - "$out/gpu-selfcheck.json" > "$out/gpu-selfcheck.txt" 2>> "$log" <<'EOF'
import json, sys
from rich.console import Console
from harness.tools.selfcheck import outcomes_table
Console(width=160).print(outcomes_table(json.load(open(sys.argv[1]))))
EOF
cat "$out/gpu-selfcheck.txt"

# 2. bench on the GPU, the same figures as results/bench/cpu-tiny.json
step bench sh -c "ladir-bench bench --device cuda --out '$out/cuda-tiny.json' 2>> '$log'"

# 3. the tests that need a GPU or vLLM (each skips itself where its requirement is missing)
step tests sh -c "python -m pytest -q -rs tests/test_vllm_real.py tests/test_ladir.py -k 'vllm or cuda' 2>&1 | tee '$out/gpu-tests.txt'"

echo "selfcheck runs and logs: $runs" | tee -a "$log"
echo "reports: $out/gpu-selfcheck.json $out/gpu-selfcheck.txt $out/cuda-tiny.json $out/gpu-tests.txt $log" | tee -a "$log"
exit "$failed"
