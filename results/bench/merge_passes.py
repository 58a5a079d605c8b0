"""Would merging two reasoner passes into one pay on this CPU (a block's commit with the next block's
first velocity evaluation)? The tiny backbone after a 50-column cached prefix, 100 rows: two passes of
7 new positions against one of 14 (and one of 1, a token's), 15 interleaved rounds after a warm-up.

    python results/bench/merge_passes.py
"""
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness.lm import CachedSequence
from harness.tools.bench import bench_context

with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
    method, _ = bench_context("ladir", "tiny", "cpu", Path(scratch))
    model = method.vae.decoder  # the base architecture, as the reasoner's backbone
    hidden = model.config.hidden_size
    prefix = CachedSequence(model, 100, "cpu")
    prefix.append(inputs_embeds=torch.randn(100, 50, hidden), all_logits=False)

    def run(width: int) -> None:
        prefix.fork().append(inputs_embeds=torch.randn(100, width, hidden), all_logits=False)

    parts = {"two 7-position passes": lambda: (run(7), run(7)), "one 14-position pass": lambda: run(14),
             "one 1-position pass": lambda: run(1)}
    times = {name: [] for name in parts}
    for repeat in range(16):  # interleaved, so that the load drifts between rounds, not within one
        for name, fn in parts.items():
            start = time.perf_counter()
            fn()
            if repeat:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    ratios = [two / one for two, one in zip(times["two 7-position passes"], times["one 14-position pass"], strict=True)]
    print({name: round(1e3 * statistics.median(t), 1) for name, t in times.items()}, "ms per 100 rows;",
          f"two 7-position / one 14-position: median {statistics.median(ratios):.2f}")
