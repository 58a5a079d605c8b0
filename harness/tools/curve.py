"""A learning curve from a run's intermediate checkpoints (`ladir-bench curve`): each checkpoint of the
run's newest phase (or of `phases`, e.g. LaDiR's stage1,stage2) evaluated as if training had stopped
there, with the step figures `eval` reports where the task checks steps (`harness.evaluate.steps`). Whether a
method has plateaued at its budget, or was cut off mid-curve, is read here. Run it on the validation
split, so that choosing a budget never looks at the test problems the tables report.

A checkpoint is evaluated through a copy of the run that holds only it (hard links, so no weights are
copied): a method loads a phase's latest checkpoint, so the copy loads that step. The copy is removed
afterwards; its evaluation folder (samples.jsonl, metrics.json, manifest.json) moves to
`RUN/curve/SPLIT-kK-limitN/step-N/` (`PHASE-step-N/` for the phases after the first), and one row per
checkpoint (its metrics and step figures) goes to the curve file; a re-run skips the checkpoints
already there. `follow` waits for new checkpoints until the phases write DONE, so a curve can be
drawn beside a training run before `keep_checkpoints` prunes them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import BadInput
from harness.jsonl import read_jsonl, write_json_atomic
from harness.train.checkpoint import DONE_MARKER, checkpoints, phase_done

CURVE_COPIES = "_curves"


def newest_phase(run_dir: Path) -> Path | None:
    """The phase folder whose checkpoints are the curve by default: the run's newest phase, the one
    its sampler loads (ar-sft: sft; LaDiR: stage2; Coconut: its last stage); None before one has begun."""
    phases = [folder.parent for folder in run_dir.glob("*/checkpoints")]
    return max(phases, key=lambda phase: (phase / "checkpoints").stat().st_ctime) if phases else None


def curve_folder(run_dir: Path, split: str, k: int, limit: int) -> Path:
    return run_dir / "curve" / f"{split}-k{k}-limit{limit}"


def evaluate_checkpoint(root: Path, run: str, phases: list[str], phase: str, step: int, split: str, k: int,
                        limit: int, knobs: dict[str, Any]) -> dict[str, Any]:
    """One row of the curve: the run as it was at `phase`'s checkpoint `step`, evaluated."""
    from harness.evaluate.run import evaluate_run
    from harness.runs import open_run

    run_dir = root / run
    # under `_curves/`, beside `_base/`: not a run of the runs folder (a plan, a table or a rate ignores it)
    copy_name = f"{CURVE_COPIES}/{run}-at-{phase}-{step}"
    copy = root / copy_name
    shutil.rmtree(copy, ignore_errors=True)
    later_phases = phases[phases.index(phase) + 1:]  # left out of the copy, so it loads this phase
    shutil.copytree(run_dir, copy, copy_function=os.link,
                    ignore=shutil.ignore_patterns("results", "probe", "curve", *later_phases))
    try:
        for later, folder in checkpoints(copy / phase):
            if later > step:
                shutil.rmtree(folder)
        # finished as far as the copy goes, so a method that loads its last finished phase (LaDiR:
        # stage 2 only once it is done) loads this one, with the training log's record of that step,
        # so the row's training compute is what was spent up to it; a fresh file, not a hard link
        marker = copy / phase / DONE_MARKER
        finished = json.loads(marker.read_text()) if marker.is_file() else None
        marker.unlink(missing_ok=True)
        if finished is None or finished.get("steps") != step:
            log = copy / phase / "log.jsonl"
            logged = [r for r in read_jsonl(log) if r.get("step", 0) <= step] if log.is_file() else []
            finished = {"steps": step, "last": logged[-1] if logged else {}}
        write_json_atomic(marker, finished)
        method, ctx = open_run(copy_name, root)
        metrics, out_dir = evaluate_run(method, ctx, ctx.task, split, k, limit, knobs)
        name = f"step-{step}" if phase == phases[0] else f"{phase}-step-{step}"
        kept = curve_folder(run_dir, split, k, limit) / name
        shutil.rmtree(kept, ignore_errors=True)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(out_dir, kept)  # the samples stay with the run
        return {"phase": phase, "step": step, **{k: v for k, v in metrics.items() if not isinstance(v, dict | list)},
                **metrics.get("step_figures", {})}
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def learning_curve(root: Path, run: str, phases: list[str] | None, split: str, k: int, limit: int,
                   knobs: dict[str, Any], out: Path | None = None, follow: bool = False,
                   on_row: Callable[[dict], None] = lambda row: None, poll_seconds: float = 30) -> dict[str, Any]:
    """Evaluate every checkpoint of the curve's phases not yet in the curve file (`out`, default
    RUN/curve/SPLIT-kK-limitN/curve.json); with `follow`, until the phases are done. Returns the curve."""
    run_dir = root / run
    if not (run_dir / "config.yaml").is_file():
        raise BadInput(f"no run named {run!r} under {root} (expected {run_dir / 'config.yaml'})")
    for name in phases or []:
        if not (run_dir / name).is_dir() and not follow:
            raise BadInput(f"run {run!r} has no phase {name!r} (phases: "
                           f"{', '.join(sorted(p.name for p in run_dir.iterdir() if (p / 'checkpoints').is_dir()))})")
    out = out or curve_folder(run_dir, split, k, limit) / "curve.json"
    saved = read_curve(out)
    rows = [{"phase": saved.get("phase"), **row} for row in saved.get("rows", [])]
    curve: dict[str, Any] = saved
    while True:
        # without `phases`, the newest phase, re-read each round: following moves on as training does
        newest = newest_phase(run_dir) if phases is None else None
        chosen = phases or ([newest.name] if newest is not None else None)
        if chosen is None:  # nothing trained yet (the shared base, say)
            if not follow:
                break
            time.sleep(poll_seconds)
            continue
        done = all(phase_done(run_dir / name) for name in chosen)  # read before listing the checkpoints
        seen = {(row["phase"], row["step"]) for row in rows}
        todo = [(name, step) for name in chosen if (run_dir / name).is_dir()
                for step, _ in checkpoints(run_dir / name) if (name, step) not in seen]
        for name, step in todo:
            rows.append(evaluate_checkpoint(root, run, chosen, name, step, split, k, limit, knobs))
            rows.sort(key=lambda row: (chosen.index(row["phase"]) if row["phase"] in chosen else -1, row["step"]))
            curve = {"run": run, "phase": chosen[-1], "phases": chosen, "k": k, "limit": limit, "split": split,
                     "knobs": [f"{name}={value}" for name, value in knobs.items()], "rows": rows}
            write_json_atomic(out, curve)
            on_row(next(row for row in rows if (row["phase"], row["step"]) == (name, step)))
        if not follow or (done and not todo):
            break
        time.sleep(poll_seconds)
    if not rows:
        raise BadInput(f"run {run!r} has no checkpoints to evaluate")
    return curve


def read_curve(path: Path) -> dict[str, Any]:
    """A curve file written before (continued by a re-run), or {}."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}: not a readable curve file ({error})") from None
