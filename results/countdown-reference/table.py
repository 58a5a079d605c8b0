"""The paper's Countdown table at the `reference` scale, as `ladir-bench reproduce countdown --scale
reference` wrote it (table.md, from the evaluations in evaluations/; cells.csv holds every number).

    python results/countdown-reference/table.py          # the table that opens README.md
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def first_table(markdown: str) -> str:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


if __name__ == "__main__":
    print(first_table((HERE / "table.md").read_text()))
