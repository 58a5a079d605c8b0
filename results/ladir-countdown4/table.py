"""What each LaDiR design choice does on Countdown-4, against AR-SFT at the same budget (tiny preset,
200 test problems, k = 100), with how often the samples' reasoning steps are valid and followed.

    python results/ladir-countdown4/table.py [--plot]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import Row, main, pass_at_k_table

HERE = Path(__file__).resolve().parent
ROWS = [
    Row("../baselines-countdown4/cd4-ar.k100.metrics.json", "AR-SFT"),
    Row("cd4-ar-2x.k100.metrics.json", "AR-SFT, twice the budget"),
    Row("f1b-t05-tf.k100.metrics.json", "LaDiR, VAE decoder reads latents alone (the paper's)"),
    Row("f1-dec.k100.metrics.json", "the same + the paper's stage 2 (rollouts from noise, no teacher-forced answer)"),
    Row("g1-ctx.k100.metrics.json", "LaDiR, VAE decoder reads the question and earlier steps"),
    Row("g2-ctx-noq.stage1.k100.metrics.json", "the same, answer does not attend to the question (stage-1 checkpoint)"),
    Row("g3-ctx-2x.k100.metrics.json", "the same, reasoner at twice the budget"),
    Row("g4-vae2x.k100.metrics.json", "LaDiR, VAE trained 1,200 steps (the defaults)"),
    Row("g4-vae2x.k100.reencode.metrics.json", "the defaults, sampled with `reencode`"),
    Row("g4-vae2x.k100.steps1.reencode.metrics.json", "the defaults, `reencode`, 1 Euler step"),
    Row("g8-2x2x.k100.metrics.json", "the defaults, reasoner at twice the budget"),
    Row("g8-2x2x.k100.reencode.metrics.json", "the same, sampled with `reencode`"),
    Row("g8-2x2x.k100.steps2.reencode.metrics.json", "the same, `reencode`, 2 Euler steps"),
    Row("g8-2x2x.k100.steps1.reencode.metrics.json", "the same, `reencode`, 1 Euler step"),
]

if __name__ == "__main__":
    main(HERE, pass_at_k_table(HERE, ROWS, validity=True, budget=True), "pass-at-k", [row.file for row in ROWS])
