"""The paper's Countdown table at the `reference` scale, as `ladir-bench reproduce countdown --scale
reference` wrote it (table.md, from the evaluations in evaluations/; cells.csv holds every number),
and the validation curves of its runs (curves/, `ladir-bench curve`).

    python results/countdown-reference/table.py            # the table that opens README.md
    python results/countdown-reference/table.py --curves   # validation Pass@1 at each checkpoint
    python results/countdown-reference/table.py --plateau-curves   # the same for the 9,600-step runs (plateau/)
    python results/countdown-reference/table.py --old-vs-new   # against the old protocol's table
    python results/countdown-reference/table.py --decoding     # LaDiR's solvers, MDM's decoders (decoding/)
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import decoding, reproduced_table, validation_curves

HERE = Path(__file__).resolve().parent


# The old protocol (`results/baselines-countdown4/`, `results/ladir-countdown4/`): every method from one
# base trained with AR's objective, 600 fine-tuning steps of 64 (0.77 epochs); same test problems and k.
OLD_PROTOCOL = {"ar-sft": "baselines-countdown4/cd4-ar", "coconut": "baselines-countdown4/cd4-coconut",
                "mtp": "baselines-countdown4/cd4-mtp", "mdm": "baselines-countdown4/cd4-mdm",
                "ld4lg": "baselines-countdown4/cd4-ld4lg", "ladir": "ladir-countdown4/g4-vae2x"}
COMPARED = ["pass@1", "pass@100", "diversity", "chain_valid@1", "uses_given_numbers"]


def old_vs_new() -> str:
    """Each reference-scale evaluation (seed 0) beside the method's old-protocol figures; the old
    protocol sampled every method its paper's way, so a row with other decoding knobs (LaDiR's
    `reencode` row) has no old figures."""
    def cell(metrics: dict | None, key: str) -> str:
        if metrics is None or metrics.get(key) is None:
            return "—"
        return f"{metrics[key]:.2f}" if key == "diversity" else f"{100 * metrics[key]:.1f}"

    rows = []
    for method, old_file in OLD_PROTOCOL.items():
        old_path = HERE.parent / f"{old_file}.k100.metrics.json"
        old = json.loads(old_path.read_text()) if old_path.is_file() else None
        for path in sorted((HERE / "evaluations").glob(f"{method}-*seed0-*.metrics.json")):
            new = json.loads(path.read_text())
            knobs = path.name[: -len(".metrics.json")].rsplit(".", 1)[1].removeprefix(f"k{new['k']}").strip("_")
            before = None if knobs else old
            cells = [f"{cell(before, key)} → {cell(new, key)}" for key in COMPARED]
            name = f"{method} ({knobs})" if knobs else method
            rows.append(f"| {name} | {'—' if knobs else f'`{old_file}.k100`'} | " + " | ".join(cells) + " |")
    header = "| method | old-protocol file | " + " | ".join(f"{key}: old → reference" for key in COMPARED) + " |"
    return "\n".join([header, "| :--- | :--- |" + " ---: |" * len(COMPARED), *rows])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--curves", action="store_true", help="the validation curves instead")
    shown.add_argument("--plateau-curves", action="store_true", help="the 9,600-step runs' curves (plateau/)")
    shown.add_argument("--old-vs-new", action="store_true", help="the old protocol's figures beside these")
    shown.add_argument("--decoding", action="store_true", help="each decoding setting's Pass@1 and speed (decoding/)")
    args = parser.parse_args()
    print(validation_curves(HERE) if args.curves else validation_curves(HERE / "plateau") if args.plateau_curves
          else old_vs_new() if args.old_vs_new
          else decoding(HERE) if args.decoding else reproduced_table(HERE))
