"""The paper's Countdown table at the `reference` scale, as `ladir-bench reproduce countdown --scale
reference` wrote it (table.md, from the evaluations in evaluations/; cells.csv holds every number),
and the validation curves of its runs (curves/, `ladir-bench curve`).

    python results/countdown-reference/table.py            # the table that opens README.md
    python results/countdown-reference/table.py --curves   # validation Pass@1 at each checkpoint
    python results/countdown-reference/table.py --old-vs-new   # against the old protocol's table
"""
import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def first_table(markdown: str) -> str:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def curves() -> str:
    """One row per run: validation Pass@1 (percent) at each checkpoint of the phases its curve follows."""
    rows = []
    for path in sorted((HERE / "curves").glob("*.curve.json")):
        curve = json.loads(path.read_text())
        points = ", ".join(f"{row['phase']}@{row['step']}: {100 * row['pass@1']:.1f}" for row in curve["rows"])
        rows.append(f"| {curve['run']} | {curve['split']}, k = {curve['k']}, {curve['limit']} problems | {points} |")
    return "\n".join(["| run | evaluated on | Pass@1 at each checkpoint |", "| :--- | :--- | :--- |", *rows])


# The old protocol (`results/baselines-countdown4/`, `results/ladir-countdown4/`): every method from one
# base trained with AR's objective, 600 fine-tuning steps of 64 (0.77 epochs); same test problems and k.
OLD_PROTOCOL = {"ar-sft": "baselines-countdown4/cd4-ar", "coconut": "baselines-countdown4/cd4-coconut",
                "mtp": "baselines-countdown4/cd4-mtp", "mdm": "baselines-countdown4/cd4-mdm",
                "ld4lg": "baselines-countdown4/cd4-ld4lg", "ladir": "ladir-countdown4/g4-vae2x"}
COMPARED = ["pass@1", "pass@100", "diversity", "chain_valid@1", "uses_given_numbers"]


def old_vs_new() -> str:
    """Each method's old-protocol figures beside its reference-scale ones (seed 0), where both exist."""
    new = {}
    for path in sorted((HERE / "evaluations").glob("*seed0-*.metrics.json")):
        metrics = json.loads(path.read_text())
        new[metrics["method"]] = metrics

    def cell(metrics: dict | None, key: str) -> str:
        if metrics is None or metrics.get(key) is None:
            return "—"
        return f"{metrics[key]:.2f}" if key == "diversity" else f"{100 * metrics[key]:.1f}"

    rows = []
    for method, old_file in OLD_PROTOCOL.items():
        old_path = HERE.parent / f"{old_file}.k100.metrics.json"
        old = json.loads(old_path.read_text()) if old_path.is_file() else None
        cells = [f"{cell(old, key)} → {cell(new.get(method), key)}" for key in COMPARED]
        rows.append(f"| {method} | `{old_file}.k100` | " + " | ".join(cells) + " |")
    header = "| method | old-protocol file | " + " | ".join(f"{key}: old → reference" for key in COMPARED) + " |"
    return "\n".join([header, "| :--- | :--- |" + " ---: |" * len(COMPARED), *rows])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--curves", action="store_true", help="the validation curves instead")
    shown.add_argument("--old-vs-new", action="store_true", help="the old protocol's figures beside these")
    args = parser.parse_args()
    print(curves() if args.curves else old_vs_new() if args.old_vs_new else first_table((HERE / "table.md").read_text()))
