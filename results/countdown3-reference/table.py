"""The paper's Countdown table at the `reference` scale on Countdown-3, as `ladir-bench reproduce countdown
--scale reference --tasks countdown3` wrote it (table.md, from the evaluations in evaluations/; cells.csv
holds every number), and the validation curves of its runs (curves/, `ladir-bench curve`).

    python results/countdown3-reference/table.py            # the table that opens README.md
    python results/countdown3-reference/table.py --curves   # validation Pass@1 at each checkpoint
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import reproduced_table, validation_curves

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curves", action="store_true", help="the validation curves instead")
    print(validation_curves(HERE) if parser.parse_args().curves else reproduced_table(HERE))
