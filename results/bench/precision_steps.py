"""Seconds per optimizer step of every method's training phases in float32 and under bf16 autocast
(`train.mixed_precision=bf16`), each method's two runs back to back so that the machine's load drifts
between methods, not within one: `ladir-bench train` itself at the reference batch (the tiny preset,
64), a short run of each phase, the median seconds a step between log records
(`harness.tools.reproduce.phase_seconds`, a record every 5 steps). The shared base is trained first for each precision (20
steps) and not timed.

    python results/bench/precision_steps.py RUNS_DIR [--task countdown4] [--steps 60] [--methods ar-sft,...]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from harness.runs import open_run
from harness.tools.reproduce import phase_seconds

PRECISIONS = ("no", "bf16")
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("runs_dir", type=Path)
parser.add_argument("--task", default="countdown4")
parser.add_argument("--steps", type=int, default=60, help="each phase's steps (LaDiR's stage 2: half)")
parser.add_argument("--methods", default="ar-sft,ladir,coconut,ld4lg,mdm,mtp")
args = parser.parse_args()


def train(method: str, precision: str) -> str:
    run = f"{method}-{precision}"
    phases = {"ladir": [f"method_options.vae_steps={args.steps}", f"method_options.stage2_steps={args.steps // 2}"],
              "ld4lg": [f"method_options.vae_steps={args.steps}"]}.get(method, [])
    sets = ["train.base_steps=20", "train.checkpoint_every=100000", "train.log_every=5", f"train.mixed_precision={precision}", *phases]
    command = [sys.executable, "-m", "harness.cli", "train", "--method", method, "--task", args.task,
               "--steps", str(args.steps), "--run", run, "--runs-dir", str(args.runs_dir / precision),
               *(part for value in sets for part in ("--set", value))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{method} ({precision}) failed: {done.stderr.strip().splitlines()[-1]}")
    return run


def seconds_per_step(method: str, run: str, precision: str) -> dict[str, float]:
    """Each phase's median seconds a step (phase_seconds of one step)."""
    root = args.runs_dir / precision
    instance, _ = open_run(run, root, load=False)
    timed = {}
    for stage in instance.stages:
        # a shared phase (LaDiR's and LD4LG's autoencoder) trains under root/_vae/, the run's folder stays empty
        logs = [root / run / stage / "log.jsonl", *sorted(root.glob(f"_vae/{method}-*/log.jsonl"))]
        folder = next(log.parent for log in logs if log.is_file())
        seconds = phase_seconds(folder, {"steps": 1})  # no elapsed total to fall back on: None if too few records
        if seconds is None:
            sys.exit(f"{run}: {stage} logged too few steps to time; raise --steps")
        timed[stage] = round(seconds, 4)
    return timed


report = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "amx_bf16": "amx_bf16" in Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo")
                      else None, "torch": torch.__version__},
          "task": args.task, "steps": args.steps, "methods": {}}
for method in args.methods.split(","):
    timed = {precision: seconds_per_step(method, train(method, precision), precision) for precision in PRECISIONS}
    report["methods"][method] = {stage: {"fp32": timed["no"][stage], "bf16": timed["bf16"][stage],
                                         "speedup": round(timed["no"][stage] / timed["bf16"][stage], 2)}
                                 for stage in timed["no"]}
    print(method, json.dumps(report["methods"][method]), flush=True)
print(json.dumps(report, indent=1))
