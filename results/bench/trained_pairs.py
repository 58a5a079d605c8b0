"""A diffusion run's time per sample against an AR-SFT run's (default: `ladir-cd3` and `ar-cd3`,
countdown3; `--run` / `--ar` name others, e.g. the reference runs), their own lengths, k = 10, the
first LIMIT test problems, the eval's batch size: each method's own `sample`, timed in back-to-back
pairs (median ratio) so that the machine's load drifts between pairs, not within one. One setting
of the diffusion run's knobs per argument, knobs separated by commas (`default`: none).

    python results/bench/trained_pairs.py RUNS_DIR LIMIT PAIRS steps=2 steps=10 steps=2,write_reasoning=false
    python results/bench/trained_pairs.py RUNS_DIR LIMIT PAIRS --run RUN --ar AR_RUN SETTING...
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from harness.config import parse_override
from harness.runs import open_run

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("runs_dir", type=Path)
parser.add_argument("limit", type=int)
parser.add_argument("pairs", type=int)
parser.add_argument("settings", nargs="*", help="knobs of the diffusion run, comma-separated, one setting each "
                                                "(default: the method's defaults)")
parser.add_argument("--run", default="ladir-cd3", help="the diffusion run (LaDiR, MDM, ...)")
parser.add_argument("--ar", default="ar-cd3", help="the AR-SFT run it is timed against")
args = parser.parse_intermixed_args()
root, limit, pairs = args.runs_dir, args.limit, args.pairs
# each: the `--knob` texts of one setting; `default` (or no setting at all) samples at the method's defaults
settings = [[] if group == "default" else group.split(",") for group in args.settings] or [[]]
ar, ctx = open_run(args.ar, root)
ladir, _ = open_run(args.run, root)
problems = ctx.task.problems("test")[:limit]
k = 10


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


report = {"run": args.run, "ar": args.ar, "threads": torch.get_num_threads(), "problems": len(problems), "k": k,
          "pairs": pairs}
with torch.no_grad():
    for texts in settings:
        knobs = {key: value for text in texts for key, value in parse_override(text).items()}  # as `--knob` parses
        ratios, ladir_times, ar_times = [], [], []
        for index in range(pairs + 1):  # the first pair warms up
            ladir_s = seconds(lambda knobs=knobs: ladir.sample(problems, k, **knobs))
            ar_s = seconds(lambda: ar.sample(problems, k))
            if index:
                ratios.append(ladir_s / ar_s)
                ladir_times.append(ladir_s)
                ar_times.append(ar_s)
        name = ",".join(texts) or "default"
        report[name] = {"ratio": statistics.median(ratios), "ratios": [round(r, 3) for r in ratios],
                        "ladir_ms_per_sample": 1e3 * statistics.median(ladir_times) / (k * len(problems)),
                        "ar_ms_per_sample": 1e3 * statistics.median(ar_times) / (k * len(problems))}
        print(name, json.dumps(report[name]), flush=True)
print(json.dumps(report))
