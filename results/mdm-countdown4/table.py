"""Masked diffusion (MDM) on Countdown-4, tiny preset: a learning curve and the decoding knobs at its
final checkpoint, beside AR-SFT at the same k (k = 10 on the first 100 test problems, seed 0).

    python results/mdm-countdown4/table.py [--plot]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import Row, main, markdown, number, percent, record

HERE = Path(__file__).resolve().parent
FINAL = "lc-mgdm.k10"  # the curve's final checkpoint (3,200 steps), sampled with each decoder setting
# Columns after Pass@k and the copy diagnostic come from RUN....copy-arithmetic.json (copy_and_arithmetic.py).
ROWS = [
    *(Row(f"lc-mgdm-c{step}.k10.metrics.json", f"MGDM recipe, SFT step {step:,} of 3,200, recipe decoder (easy_first)")
      for step in (800, 1600, 2400)),
    Row(f"{FINAL}.recipe.metrics.json", "MGDM recipe, step 3,200 (end): easy_first (recipe), 32 steps"),
    Row(f"{FINAL}.easy-first-dual8.metrics.json", "step 3,200: easy_first, block 8, dual cache"),
    Row(f"{FINAL}.low-conf.metrics.json", "step 3,200: low_confidence, temperature 1"),
    Row("lc-mgdm.k1.greedy.metrics.json", "step 3,200: greedy (low_confidence, temperature 0), k = 1"),
    Row("lc-mgdm.k1.greedy-steps72.metrics.json", "step 3,200: greedy, 72 steps (one token a step), k = 1"),
    Row(f"{FINAL}.low-conf-block8.metrics.json", "step 3,200: low_confidence, block 8, no cache"),
    Row(f"{FINAL}.low-conf-prefix8.metrics.json", "step 3,200: low_confidence, block 8, prefix cache"),
    Row(f"{FINAL}.low-conf-dual8.metrics.json", "step 3,200: low_confidence, block 8, dual cache"),
    Row(f"{FINAL}.low-conf-dual8-lastblock.metrics.json",
        "step 3,200: low_confidence, block 8, dual cache refreshing only the last block (`refresh=last_block`)"),
    Row(f"{FINAL}.low-conf-dual8-lastblock-t0.7.metrics.json",
        "step 3,200: low_confidence, block 8, dual cache, `refresh=last_block`, threshold 0.7"),
    Row(f"{FINAL}.low-conf-dual8-t0.9.metrics.json", "step 3,200: low_confidence, block 8, dual cache, threshold 0.9"),
    Row(f"{FINAL}.low-conf-dual8-t0.7.metrics.json", "step 3,200: low_confidence, block 8, dual cache, threshold 0.7"),
    Row(f"{FINAL}.low-conf-dual8-steps18.metrics.json", "step 3,200: low_confidence, block 8, dual cache, 18 steps (2 a block)"),
    Row(f"{FINAL}.low-conf-dual8-steps9.metrics.json", "step 3,200: low_confidence, block 8, dual cache, 9 steps (1 a block)"),
    Row("lc-ar-c3200.k10.ar.metrics.json", "AR-SFT, step 3,200 of a 4,800-step run, sampled beside the rows above"),
    Row("llada-md.k10.recipe.metrics.json", "LLaDA recipe, 600 SFT steps: low_confidence (recipe)"),
    Row("mgdm-md.k10.low-conf.metrics.json", "MGDM recipe, 600 SFT steps: low_confidence"),
]


def table(rows: list[Row]) -> str:
    header = ["row", "results file", "checkpoint", "Pass@1", "Pass@10", "chain_valid@1", "uses given numbers %",
              "well-formed steps %", "first operands given %", "steps exact %", "samples/s"]
    lines = []
    for row in rows:
        r = record(HERE, row)
        m = r["metrics"]
        steps = json.loads((HERE / row.file.replace(".metrics.json", ".copy-arithmetic.json")).read_text())
        lines.append([row.label, f"`{r['file']}`", r["checkpoint"], percent(m["pass@1"]), percent(m.get("pass@10")),
                      percent(m.get("chain_valid@1")), percent(m.get("uses_given_numbers")),
                      percent(steps["well_formed_steps"]), percent(steps["first_operands_given"]),
                      percent(steps["step_arithmetic_exact"]),
                      number(round(m["samples_per_s"], 1))])
    return markdown(header, lines, left=3)


if __name__ == "__main__":
    main(HERE, table(ROWS), "pass-at-k", [row.file for row in ROWS])
