"""Does LaDiR's diversity guidance (gamma_max) buy accuracy or diversity? Countdown-4, tiny preset, the
200 test problems of the k = 100 tables, k = 10, 10 Euler steps; gamma_max 0 is the step sweep's
10-step point.

    python results/ladir-guidance-countdown4/table.py [--plot]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import main, sweep_table

HERE = Path(__file__).resolve().parent
STEPS = "../ladir-steps-countdown4/"


def sweep(run: str, suffix: str = "") -> list[str]:
    return [f"{STEPS}{run}.k10.steps10{suffix}.metrics.json",
            *(f"{run}.k10.gamma{g}{suffix}.metrics.json" for g in ("0.3", "0.5", "1.0"))]


SERIES = [
    ("`f1b-t05-tf`: VAE decoder reads latents alone", sweep("f1b-t05-tf")),
    ("`g1-ctx`: decoder reads the question and earlier steps", sweep("g1-ctx")),
    ("`g4-vae2x`: the defaults (VAE 1,200 steps)", sweep("g4-vae2x")),
    ("`g4-vae2x`, `reencode`", sweep("g4-vae2x", ".reencode")),
]

if __name__ == "__main__":
    files = [file for _, files in SERIES for file in files]
    main(HERE, sweep_table(HERE, SERIES, "gamma_max", ["pass@1", "pass@10", "diversity"]), "gamma", files)
