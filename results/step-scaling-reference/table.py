"""LaDiR's accuracy over its denoising steps at the `reference` scale, AR-SFT beside it, as `ladir-bench
reproduce step-scaling --scale reference --methods ladir,ar-sft` wrote it (table.md, from the evaluations
in evaluations/; cells.csv holds every number).

    python results/step-scaling-reference/table.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import reproduced_table

if __name__ == "__main__":
    print(reproduced_table(Path(__file__).resolve().parent))
