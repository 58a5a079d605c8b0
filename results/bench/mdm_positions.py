"""Token positions a sample reads (`harness.compute.ComputeCounter`) on `ladir-bench bench`'s pinned
MDM workload (untrained tiny models, the length pinned to AR-SFT's completion, k = 100 on one
problem): MDM with its default decoder and with `MDM_FAST_SETTING`, against AR-SFT writing the same
length. Counts, not times, so the machine's load does not move them.

    python results/bench/mdm_positions.py > results/bench/mdm-positions.json
"""
import json
import tempfile
from pathlib import Path

import torch

from harness.compute import ComputeCounter
from harness.tools.bench import MDM_FAST_SETTING, ar_writer, bench_context, pin_mdm_length, reference_workload


def positions_per_sample(run, samples: int) -> float:
    counter = ComputeCounter()
    with counter, torch.no_grad():
        run()
    return counter.total.forward_tokens / samples


if __name__ == "__main__":
    torch.set_num_threads(1)
    k = 100
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        ar, ctx = bench_context("ar-sft", "tiny", "cpu", root)
        mdm, _ = bench_context("mdm", "tiny", "cpu", root)
        work = reference_workload(ctx)
        steps = pin_mdm_length(mdm, work)
        problems = ctx.task.problems("test")[:1]
        batch = ctx.config.eval.batch_size
        figures = {name: positions_per_sample(lambda knobs=knobs: mdm.sample(problems, k, steps=steps, batch_size=batch,
                                                                             **knobs), k)
                   for name, knobs in {"mdm_default": {}, "mdm_fast": MDM_FAST_SETTING}.items()}
        figures["ar_sft"] = positions_per_sample(lambda: ar_writer(ar, work.completion_tokens)(problems, k, batch), k)
    print(json.dumps({"positions_per_sample": figures, "gen_length": work.completion_tokens, "steps": steps, "k": k,
                      "fast_setting": MDM_FAST_SETTING}, indent=2))
