"""Does LaDiR's accuracy grow with the number of Euler steps per block? Countdown-4, tiny preset, the
200 test problems of the k = 100 tables, k = 10.

    python results/ladir-steps-countdown4/table.py [--plot]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import main, sweep_table

HERE = Path(__file__).resolve().parent


def sweep(run: str, suffix: str = "", steps=(1, 5, 10, 30)) -> list[str]:
    return [f"{run}.k10.steps{s}{suffix}.metrics.json" for s in steps]


SERIES = [
    ("`f1b-t05-tf`: VAE decoder reads latents alone", sweep("f1b-t05-tf")),
    ("`g1-ctx`: decoder reads the question and earlier steps", sweep("g1-ctx")),
    ("`g2-ctx-noq`: the same, answer does not attend to the question (stage 1)", sweep("g2-ctx-noq.stage1")),
    ("`g3-ctx-2x`: `g1-ctx`, reasoner at twice the budget", sweep("g3-ctx-2x")),
    ("`g4-vae2x`: the defaults (VAE 1,200 steps)", sweep("g4-vae2x")),
    ("`g4-vae2x`, `reencode`", sweep("g4-vae2x", ".reencode", (1, 2, 3, 5, 10, 30))),
    ("`g8-2x2x`: the defaults, reasoner at twice the budget, `reencode`", sweep("g8-2x2x", ".reencode", (1, 2, 3, 5, 10, 30))),
    ("`g9-fm5`: the defaults, `lambda_fm` 5, `fm_repeats` 4, `reencode`", sweep("g9-fm5", ".reencode")),
]

if __name__ == "__main__":
    files = [file for _, files in SERIES for file in files]
    main(HERE, sweep_table(HERE, SERIES, "steps", ["pass@1", "pass@10"]), "step-scaling", files, plot_figures=("pass@1",))
