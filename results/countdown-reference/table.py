"""The paper's Countdown table at the `reference` scale, as `ladir-bench reproduce countdown --scale
reference` wrote it (table.md, from the evaluations in evaluations/; cells.csv holds every number),
and the validation curves of its runs (curves/, `ladir-bench curve`).

    python results/countdown-reference/table.py            # the table that opens README.md
    python results/countdown-reference/table.py --curves   # validation Pass@1 at each checkpoint
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curves", action="store_true", help="the validation curves instead")
    args = parser.parse_args()
    print(curves() if args.curves else first_table((HERE / "table.md").read_text()))
