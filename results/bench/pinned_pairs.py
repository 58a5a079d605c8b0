"""LaDiR / AR-SFT sampling time on `ladir-bench bench`'s pinned workload (untrained tiny models,
k = 100, 2 problems) with the bench's own functions, for three settings only (Euler-2 with and
without the reasoning text, Euler-10), and the Euler-2 breakdown: a quick paired measurement.

    python results/bench/pinned_pairs.py [REPEATS] [OUT.json]
"""
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.tools.bench import (
    FAST_SETTING,
    PAPER_SETTING,
    ar_writer,
    bench_context,
    ladir_breakdown,
    ladir_sampler,
    paired_ratio,
    reference_workload,
    setting_name,
)

repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
started = time.time()
with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
    root = Path(scratch)
    ar, ctx = bench_context("ar-sft", "tiny", "cpu", root)
    ladir, _ = bench_context("ladir", "tiny", "cpu", root)
    work = reference_workload(ctx)
    problems = ctx.task.problems("test")[:2]
    k, batch, device = 100, ctx.config.eval.batch_size, ctx.device
    samples = k * len(problems)
    write_ar = ar_writer(ar, work.completion_tokens)

    def ar_run() -> None:
        write_ar(problems, k, batch)

    def ladir_run(knobs):
        sample = ladir_sampler(ladir, work, **knobs)
        return lambda: sample(problems, k, batch)

    result = {"workload": work.__dict__, "threads": torch.get_num_threads()}
    for knobs in (FAST_SETTING, {**FAST_SETTING, "write_reasoning": False}, PAPER_SETTING):
        ratio, ladir_s, ar_s = paired_ratio(ladir_run(knobs), ar_run, repeats, device)
        result[setting_name(knobs)] = {"ratio": ratio, "ladir_ms": 1e3 * ladir_s / samples, "ar_ms": 1e3 * ar_s / samples}
        print(setting_name(knobs), result[setting_name(knobs)], flush=True)
    parts = ladir_breakdown(ladir, ladir_run(FAST_SETTING), samples, math.ceil(samples / batch), device)
    result["breakdown_euler2"] = {"ms_per_sample": {n: 1e3 * v for n, v in parts["seconds_per_sample"].items()},
                                  "share": parts["share"], "passes": parts["passes_per_batch"],
                                  "total_ms": 1e3 * parts["total_seconds_per_sample"]}
    print(json.dumps(result["breakdown_euler2"], indent=1))
result["seconds"] = time.time() - started
if out:
    out.write_text(json.dumps(result, indent=1))
