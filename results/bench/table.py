"""`ladir-bench bench --device cpu` on this project's 2-core CPU: each figure against its target
(`cpu-tiny.json`).

    python results/bench/table.py
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import markdown

HERE = Path(__file__).resolve().parent
WHAT = {
    "sample_ratio_ladir_ar": "LaDiR / AR-SFT sampling time, k = 100, 10 Euler steps",
    "sample_ratio_ladir_ar_fast": "the same at 2 Euler steps (`FAST_SETTING`, Pass@1 matching 10 steps')",
    "sample_ratio_ladir_ar_answer_only": "the same, blocks not decoded to text (`write_reasoning=false`)",
    "sample_ratio_mdm_ar": "MDM / AR-SFT sampling time, k = 100, the default decoder (3 tokens a step, no cache)",
    "sample_ratio_mdm_ar_fast": "the same with blocks of 8, the dual cache refreshed for the last block, threshold 0.9",
    "cache_ratio": "cached / uncached denoising step, 8 finished blocks",
    "train_ratio_ladir_ar": "LaDiR stage-1 / AR-SFT training sequences/s",
    "mfu": "AR-SFT training FLOP/s / measured fp32 matmul peak",
    "batching_speedup": "samples/s across problems / one problem per batch, k = 10",
    "countdown_checker_per_s": "Countdown checker, samples/s",
    "math_checker_per_s": "math checker (math-verify, 2 workers), samples/s",
    "code_checker_per_s": "code checker (HumanEval canonical solutions, 2 workers), samples/s",
}


def table(report: dict) -> str:
    rows = []
    for name, what in WHAT.items():
        value, target = report["figures"][name], report["targets"][name]
        met = value <= target["target"] if target["bound"] == "max" else value >= target["target"]
        bound = "<=" if target["bound"] == "max" else ">="
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        rows.append([f"`{name}`", what, f"{bound} {target['target']:,}", shown, "yes" if met else "no"])
    return markdown(["figure", "what", "target", "measured", "met"], rows, left=2)


if __name__ == "__main__":
    print(table(json.loads((HERE / "cpu-tiny.json").read_text())))
