"""Every method on Countdown-4 (tiny preset, the first 200 test problems, k = 100): the committed
protocol (one AR base, 600 fine-tuning steps) and today's code (a base per family, each method's
reference recipe), with MGDM's metric (chain_valid@1) and the copy diagnostic beside Pass@k.

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
    Row("cd4-ar-600.k100.metrics.json", "today's code: AR-SFT, the same 600 steps"),
    Row("coconut-even.k100.metrics.json", "today's code: Coconut, stages split evenly"),
    Row("coconut-ref.k100.metrics.json", "today's code: Coconut, the official stage split (default)"),
    Row("ld4lg-nosc.k100.metrics.json", "today's code: LD4LG without self-conditioning"),
    Row("ld4lg-sc.k100.metrics.json", "today's code: LD4LG with self-conditioning (default)"),
    Row("lc-mgdm.k100.low-conf.metrics.json",
        "today's code: MDM, MGDM's loss from the masked-diffusion base, 3,200 steps, low-confidence decoding"),
    Row("lc-ar.k100.metrics.json", "the reference budget: AR-SFT, 4,800 steps (6 epochs)"),
]
EXTRA = (("chain_valid@1", "chain_valid@1"), ("uses given numbers", "uses_given_numbers"),
         ("AE ceiling", "reconstruction_ceiling"))

if __name__ == "__main__":
    main(HERE, pass_at_k_table(HERE, ROWS, extra=EXTRA), "pass-at-k", [row.file for row in ROWS[:8]])
