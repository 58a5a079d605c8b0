"""A learning curve from a run's intermediate checkpoints: each checkpoint of the run's last phase (or
of `--phases`, e.g. LaDiR's stage1,stage2) evaluated as if training had stopped there, with the
Countdown step diagnostics that decide the reference scale (how often a method's own steps are valid
arithmetic, and whether they plan).

    python results/reference-scale/curve.py --runs-dir runs --run lc-ar --k 10 --limit 100 --split val \
        --out results/reference-scale/lc-ar.curve.json [--follow]

The validation split, so that choosing the scale never looks at the test problems the tables report.

A checkpoint is evaluated through a copy of the run that holds only it (hard links, so no weights
are copied): `ladir-bench eval` loads a phase's latest checkpoint, so the copy loads that step. The
copy is removed afterwards; its evaluation folder (samples.jsonl, metrics.json, manifest.json) moves
to `RUN/curve/SPLIT-kK-limitN/step-N/`, and its metrics and the step figures land in `--out`, one
row per step; a re-run skips the steps already there. `--follow` waits for new checkpoints until the
phase writes DONE.

Step figures over every sampled completion (reasoning split at `The answer is`; computed by
results/ladir-countdown4/step_validity.py, as for every results table):
`arithmetic_valid` (the step's arithmetic is exact: `a op b = c` true), split into the steps before the
last (`arithmetic_valid_before_last`) and the last (`arithmetic_valid_last`, with
`last_step_writes_target`: how often it ends in `= target` whether or not that is true), `step_valid` (exact and its
operands still in the pool: the checker's replay), `first_step_valid`, `chain_solves` (the steps alone
reach the target), `passed_without_chain` (answer right although the steps do not solve it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.jsonl import write_json_atomic
from harness.train.checkpoint import DONE_MARKER, checkpoints, phase_done
from tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ladir-countdown4"))
from step_validity import step_validity  # the same step figures as every results table


def last_phase(run_dir: Path) -> Path | None:
    """The phase folder whose checkpoints are the curve: the run's newest phase, the one its sampler
    loads (ar-sft: sft; LaDiR: stage2; Coconut: its last stage); None before one has begun."""
    phases = [folder.parent for folder in run_dir.glob("*/checkpoints")]
    return max(phases, key=lambda phase: (phase / "checkpoints").stat().st_ctime) if phases else None


def evaluate_step(args, run_dir: Path, phases: list[str], phase: Path, step: int) -> dict:
    later_phases = phases[phases.index(phase.name) + 1:]  # left out of the copy, so it loads this phase
    copy_name = f"{args.run}-at-{phase.name}-{step}"
    copy = args.runs_dir / copy_name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, copy_function=os.link,
                    ignore=shutil.ignore_patterns("results", "probe", "curve", *later_phases))
    for later, folder in checkpoints(copy / phase.name):
        if later > step:
            shutil.rmtree(folder)
    # finished as far as the copy goes, so a method that loads its last finished phase (LaDiR: stage 2
    # only once it is done) loads this one; a fresh file, not written through the run's hard link
    (copy / phase.name / DONE_MARKER).unlink(missing_ok=True)
    write_json_atomic(copy / phase.name / DONE_MARKER, {"steps": step})
    try:
        command = ["ladir-bench", "eval", "--run", copy_name, "--runs-dir", str(args.runs_dir), "--k", str(args.k),
                   "--limit", str(args.limit), "--split", args.split, "--json",
                   *(option for knob in args.knob for option in ("--knob", knob))]
        metrics = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        kept = run_dir / "curve" / f"{args.split}-k{args.k}-limit{args.limit}" / (
            f"step-{step}" if phase.name == phases[0] else f"{phase.name}-step-{step}")
        shutil.rmtree(kept, ignore_errors=True)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(next((copy / "results").rglob("samples.jsonl")).parent, kept)  # the samples stay with the run
        task = get_task(metrics.get("task", args.task), seed=0)
        problems = {p["task_id"]: p for p in task.problems(args.split)}
        figures = step_validity(task, problems, kept / "samples.jsonl")
        figures.pop("samples_file")
        return {"phase": phase.name, "step": step,
                **{k: v for k, v in metrics.items() if not isinstance(v, dict | list)}, **figures}
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("LADIR_RUNS", "runs")))
    parser.add_argument("--run", required=True)
    parser.add_argument("--task", default="countdown4")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--split", default="test")
    parser.add_argument("--knob", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--phases", help="comma-separated phases whose checkpoints form the curve, in training "
                                          "order, through the run's last (LaDiR: stage1,stage2: a phase after "
                                          "the last listed would be loaded); default: the run's newest phase")
    parser.add_argument("--follow", action="store_true", help="wait for new checkpoints until the phases are done")
    args = parser.parse_args()
    run_dir = args.runs_dir / args.run
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows = [{"phase": saved.get("phase"), **row} for row in saved.get("rows", [])]
    listed = args.phases.split(",") if args.phases else None
    while True:
        # without --phases, the newest phase, re-read each round: --follow moves on as training does
        newest = last_phase(run_dir) if listed is None else None
        phases = listed or ([newest.name] if newest is not None else None)
        if phases is None:  # the base is still training
            if not args.follow:
                break
            time.sleep(30)
            continue
        done = all(phase_done(run_dir / name) for name in phases)  # read before listing the checkpoints
        seen = {(row["phase"], row["step"]) for row in rows}
        todo = [(name, step) for name in phases if (run_dir / name).is_dir()
                for step, _ in checkpoints(run_dir / name) if (name, step) not in seen]
        for name, step in todo:
            rows.append(evaluate_step(args, run_dir, phases, run_dir / name, step))
            rows.sort(key=lambda row: (phases.index(row["phase"]) if row["phase"] in phases else -1, row["step"]))
            write_json_atomic(args.out, {"run": args.run, "phase": phases[-1], "phases": phases, "k": args.k,
                                         "limit": args.limit, "split": args.split, "knobs": args.knob,
                                         "rows": rows})
            print(json.dumps(rows[-1]), flush=True)
        if not args.follow or (done and not todo):
            break
        time.sleep(30)
    if not rows:
        sys.exit(f"error: {run_dir} has no checkpoints to evaluate")


if __name__ == "__main__":
    main()
