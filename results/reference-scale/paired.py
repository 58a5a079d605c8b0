"""Paired differences between the Countdown-4 curves' checkpoints, on the same 100 validation problems:
the levers against each other at their last checkpoints, and each long run's last checkpoint against an
earlier one of its own (does it still climb?). Reads the evaluations `ladir-bench curve` keeps beside
each run (RUNS/RUN/curve/val-k10-limit100/sft-step-N/) and writes paired.json, which `table.py
--paired` prints; the same figures as `ladir-bench compare A --against B`.

    python results/reference-scale/paired.py RUNS
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for harness.evaluate.stats

from harness.evaluate.stats import compare

HERE = Path(__file__).resolve().parent
CURVE = "curve/val-k10-limit100"
# (A, B) as (run, step): lc-ar's own samples (the scale's run) were not kept, so it pairs with nothing
PAIRS = [(("lc-ar-l8", 4800), ("lc-ar-d192", 4800)),
         (("lc-ar-l8", 4800), ("lc-ar-9600", 9600)),
         (("lc-ar-9600", 9600), ("lc-ar-d192", 4800)),
         (("lc-ar-9600", 9600), ("lc-ar-9600", 8000)),
         (("lc-ar-9600", 9600), ("lc-ar-9600", 4800)),
         (("lc-ar-l8", 4800), ("lc-ar-l8", 4000)),
         (("lc-ar-d192", 4800), ("lc-ar-d192", 4000))]
METRICS = ["pass@1", "chain_valid@1"]


def main(runs: Path) -> Path:
    pairs = []
    for a, b in PAIRS:
        folders = [runs / run / CURVE / f"sft-step-{step}" for run, step in (a, b)]
        rows = compare([folders[0]], [folders[1]], METRICS)
        pairs.append({"a": {"run": a[0], "step": a[1]}, "b": {"run": b[0], "step": b[1]}, "metrics": rows})
    out = HERE / "paired.json"
    out.write_text(json.dumps({"split": "val", "limit": 100, "k": 10, "pairs": pairs}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python results/reference-scale/paired.py RUNS (the runs folder holding lc-ar-l8, ...)")
    print(f"wrote {main(Path(sys.argv[1]))}", file=sys.stderr)
