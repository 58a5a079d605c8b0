"""LaDiR's decoding settings against AR-SFT on the same test problems: each evaluation's Pass@1 and
Pass@100 and diversity with its 95% bootstrap interval, and the paired bootstrap difference against AR-SFT's
(`harness.evaluate.stats`, as `reproduce` computes the table's Δ), from the runs' samples.

    python results/countdown-reference/paired.py RUNS > results/countdown-reference/paired.json
"""
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for harness

from harness.evaluate.stats import cell, paired

AR_SFT = "ar-sft-countdown4-seed0-1eac9fcb87/results/countdown4-test/k100"
LADIR = "ladir-countdown4-seed0-3f7a2e9936/results/countdown4-test-stage2-step800"
COMPARED = {
    "LaDiR, the paper's sampler (10 Euler steps a block)": f"{LADIR}/k100",
    "LaDiR, reencode and 1 Euler step a block (chosen on validation problems)": f"{LADIR}/k100_reencodeTrue_steps1",
}
METRICS = ("pass@1", "pass@100", "diversity")

if __name__ == "__main__":
    runs = Path(sys.argv[1])
    baseline = [runs / AR_SFT]
    rows = []
    for label, folder in {"AR-SFT": AR_SFT, **COMPARED}.items():
        row = {"row": label, "results": folder}
        for metric in METRICS:
            row[metric] = asdict(cell([runs / folder], metric))
            if folder != AR_SFT:
                row[f"{metric} - AR-SFT"] = asdict(paired([runs / folder], baseline, metric))
        rows.append(row)
    print(json.dumps(rows, indent=2))
