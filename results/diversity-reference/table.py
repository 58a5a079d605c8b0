"""LaDiR's diversity knobs at the `reference` scale, as `ladir-bench reproduce diversity --scale
reference` wrote it (table.md, from the evaluations in evaluations/; cells.csv holds every number).

    python results/diversity-reference/table.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import reproduced_table

if __name__ == "__main__":
    print(reproduced_table(Path(__file__).resolve().parent))
