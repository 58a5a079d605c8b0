"""LaDiR / AR-SFT time per sample on trained runs `ladir-cd3` and `ar-cd3` (countdown3; their own
lengths, k = 10, the first LIMIT test problems, the eval's batch size): each method's own `sample`,
timed in back-to-back pairs (median ratio) so that the machine's load drifts between pairs, not
within one. One setting per argument, knobs separated by commas.

    python results/bench/trained_pairs.py RUNS_DIR LIMIT PAIRS steps=2 steps=10 steps=2,write_reasoning=false
"""
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from harness.runs import open_run

root, limit, pairs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
settings = [dict(knob.split("=") for knob in group.split(",")) for group in sys.argv[4:]] or [{}]
ar, ctx = open_run("ar-cd3", root)
ladir, _ = open_run("ladir-cd3", root)
problems = ctx.task.problems("test")[:limit]
k = 10


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parsed(raw: dict[str, str]) -> dict:
    return {key: value == "true" if value in ("true", "false") else int(value) if value.isdigit() else value
            for key, value in raw.items()}


report = {"threads": torch.get_num_threads(), "problems": len(problems), "k": k, "pairs": pairs}
with torch.no_grad():
    for raw in settings:
        knobs = parsed(raw)
        ratios, ladir_times, ar_times = [], [], []
        for index in range(pairs + 1):  # the first pair warms up
            ladir_s = seconds(lambda knobs=knobs: ladir.sample(problems, k, **knobs))
            ar_s = seconds(lambda: ar.sample(problems, k))
            if index:
                ratios.append(ladir_s / ar_s)
                ladir_times.append(ladir_s)
                ar_times.append(ar_s)
        name = ",".join(f"{key}={value}" for key, value in raw.items()) or "default"
        report[name] = {"ratio": statistics.median(ratios), "ratios": [round(r, 3) for r in ratios],
                        "ladir_ms_per_sample": 1e3 * statistics.median(ladir_times) / (k * len(problems)),
                        "ar_ms_per_sample": 1e3 * statistics.median(ar_times) / (k * len(problems))}
        print(name, json.dumps(report[name]), flush=True)
print(json.dumps(report))
