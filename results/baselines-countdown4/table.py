"""Every method on Countdown-4 at the same fine-tuning budget (tiny preset, 200 test problems, k = 100).

    python results/baselines-countdown4/table.py [--plot]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import Row, main, pass_at_k_table

HERE = Path(__file__).resolve().parent
LADIR = "../ladir-countdown4/"
ROWS = [
    Row("cd4-ar.k100.metrics.json", "AR-SFT"),
    Row("cd4-coconut.k100.metrics.json", "Coconut (3 continuous thoughts, 4-stage curriculum)"),
    Row("cd4-mtp.k100.metrics.json", "MTP (AR + heads for t+2..t+4)"),
    Row("cd4-mdm.k100.metrics.json", "MDM (masked diffusion, 24 unmasking steps)"),
    Row("cd4-ld4lg.k100.metrics.json", "LD4LG (one latent for the whole completion)"),
    Row(LADIR + "g4-vae2x.k100.metrics.json", "LaDiR, default options"),
    Row(LADIR + "g4-vae2x.k100.reencode.metrics.json", "LaDiR, sampled with `--knob reencode=true`"),
    Row(LADIR + "g4-vae2x.k100.steps1.reencode.metrics.json", "LaDiR, `reencode` and 1 Euler step"),
]

if __name__ == "__main__":
    main(HERE, pass_at_k_table(HERE, ROWS), "pass-at-k", [row.file for row in ROWS])
