"""Seconds per optimizer step of every method's training phases in float32 and under bf16 autocast
(`train.mixed_precision=bf16`), each method's two runs back to back so that the machine's load drifts
between methods, not within one: `ladir-bench train` itself at the reference batch (the tiny preset,
64), a short run of each phase, the median seconds a step between log records
(`harness.tools.reproduce.phase_seconds`, a record every 2 steps). The shared base is trained first
for each precision (20 steps) and not timed.

    python results/bench/precision_steps.py RUNS_DIR OUT.json [--task countdown4] [--steps 60] [--methods ar-sft,...]
    python results/bench/precision_steps.py --weighted OUT.json   # each method's speedup over a reference run

OUT.json is written after each method and read first: methods already in it are not timed again.
Coconut trains twice the steps, as its reference split gives each of its first three stages 3/25.
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
# Steps a phase trains in a reference-scale run (harness/presets/grids/scales.yaml: 4,800 fine-tuning
# steps; LaDiR's stage 2 800 of them and its VAE 2,400; LD4LG's autoencoder 2,400; Coconut's reference
# split 3/25 of the steps for each stage before the last)
REFERENCE_PHASE_STEPS = {
    "ar-sft": {"sft": 4800}, "mtp": {"mtp": 4800}, "mdm": {"mdm": 4800},
    "ladir": {"vae": 2400, "stage1": 4000, "stage2": 800}, "ld4lg": {"autoencoder": 2400, "diffusion": 4800},
    "coconut": {"stage0": 576, "stage1": 576, "stage2": 576, "stage3": 3072},
}
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("runs_dir", type=Path, nargs="?")
parser.add_argument("out", type=Path)
parser.add_argument("--weighted", action="store_true", help="print each method's whole-run speedup: its phases' "
                    "float32 seconds over their bf16 seconds, each phase weighted by its steps in a reference run")
parser.add_argument("--task", default="countdown4")
parser.add_argument("--steps", type=int, default=60, help="each phase's steps (LaDiR's stage 2: half)")
parser.add_argument("--methods", default="ar-sft,ladir,coconut,ld4lg,mdm,mtp")
args = parser.parse_args()


def train(method: str, precision: str) -> str:
    run = f"{method}-{precision}"
    steps = args.steps * (2 if method == "coconut" else 1)
    phases = {"ladir": [f"method_options.vae_steps={steps}", f"method_options.stage2_steps={steps // 2}"],
              "ld4lg": [f"method_options.vae_steps={steps}"]}.get(method, [])
    sets = ["train.base_steps=20", "train.checkpoint_every=100000", "train.log_every=2",
            f"train.mixed_precision={precision}", *phases]
    command = [sys.executable, "-m", "harness.cli", "train", "--method", method, "--task", args.task,
               "--steps", str(steps), "--run", run, "--runs-dir", str(args.runs_dir / precision),
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


if args.weighted:
    for method, phases in json.loads(args.out.read_text())["methods"].items():
        steps = REFERENCE_PHASE_STEPS[method]
        fp32 = sum(steps[phase] * timed["fp32"] for phase, timed in phases.items())
        bf16 = sum(steps[phase] * timed["bf16"] for phase, timed in phases.items())
        print(f"{method}: {fp32 / bf16:.2f}")
    sys.exit()
if args.runs_dir is None:
    parser.error("timing the steps needs RUNS_DIR (only --weighted reads OUT.json alone)")
if args.out.is_file():
    report = json.loads(args.out.read_text())
else:
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "amx_bf16": "amx_bf16" in Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else None,
               "torch": torch.__version__}
    report = {"machine": machine, "task": args.task, "steps": args.steps, "methods": {}}
for method in [m for m in args.methods.split(",") if m not in report["methods"]]:
    timed = {precision: seconds_per_step(method, train(method, precision), precision) for precision in PRECISIONS}
    report["methods"][method] = {stage: {"fp32": timed["no"][stage], "bf16": timed["bf16"][stage],
                                         "speedup": round(timed["no"][stage] / timed["bf16"][stage], 2)}
                                 for stage in timed["no"]}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(method, json.dumps(report["methods"][method]), flush=True)
