"""`--engine vllm` (vLLM's CPU build, 0.32) against the harness's own engine on the same runs, the same
2-core CPU, one evaluation at a time, seed 0, temperature 1.

    python results/vllm-cpu/table.py [--plot]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import Row, main, pass_at_k_table

HERE = Path(__file__).resolve().parent
ROWS = [
    Row("smolhf-cd3.k4.hf.metrics.json", "SmolLM2-135M `pretrained`, countdown3, 100 problems, k = 4"),
    Row("smolhf-cd3.k4.vllm.metrics.json", "the same, vLLM"),
    Row("smolhf-cd3.k4.two-cores.vllm.metrics.json", "the same, vLLM worker on 2 cores"),
    Row("cd4-ar-2x.k100.hf.metrics.json", "tiny AR-SFT (1.06M), countdown4, 200 problems, k = 100"),
    Row("cd4-ar-2x.k100.vllm.metrics.json", "the same, vLLM"),
    Row("cd4-ar-2x.k100.two-cores.vllm.metrics.json", "the same, vLLM worker on 2 cores"),
    Row("cd4-mtp.k100.hf.metrics.json", "tiny MTP (its next-token model), countdown4, 200 problems, k = 100"),
    Row("cd4-mtp.k100.vllm.metrics.json", "the same, vLLM"),
]

if __name__ == "__main__":
    table = pass_at_k_table(HERE, ROWS, extra=(("engine", "engine"), ("samples/s", "samples_per_s"),
                                               ("start-up s", "engine_startup_s")))
    main(HERE, table, "pass-at-k", [row.file for row in ROWS])
