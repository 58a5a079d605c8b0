"""A learning curve from a run's intermediate checkpoints (`ladir-bench curve`): each checkpoint of the
run's last stage, the one its sampler loads (or of `phases`, e.g. LaDiR's stage1,stage2), evaluated
as if training had stopped there, with the step figures `eval` reports where the task checks steps
(`harness.evaluate.steps`). Whether a method has plateaued at its budget, or was cut off mid-curve, is
read here. Run it on the validation split, so that choosing a budget never looks at the test problems
the tables report.

A checkpoint is evaluated through a copy of the run that holds only it (hard links, so no weights are
copied; under `RUNS/_curves/`): the stages after its phase are left out and the later checkpoints of
its phase removed, so the method loads that step, which the evaluation's own record of its checkpoint
must confirm. The copy is removed afterwards; its evaluation folder (samples.jsonl, metrics.json,
manifest.json) moves to `RUN/curve/SPLIT-kK-limitN[_KNOBvalue]/PHASE-step-N/`, and one row per
checkpoint (its metrics with their 95% intervals, step figures and the training compute spent up to it)
goes to the curve file; a re-run skips the checkpoints already there, rebuilding their rows from the
kept evaluations (a row written by an older version gains the figures added since). `follow` waits
for new checkpoints until the phases write DONE, so a curve can be drawn beside a training run before
`keep_checkpoints` prunes them (a checkpoint pruned before its turn is skipped).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import BadInput
from harness.jsonl import read_jsonl, write_json_atomic
from harness.train.checkpoint import DONE_MARKER, checkpoints, phase_done

CURVE_COPIES = "_curves"  # beside `_base/`: not runs of the runs folder (a plan, a table or a rate ignores them)


def curve_folder(run_dir: Path, split: str, k: int, limit: int, knobs: dict[str, Any]) -> Path:
    return run_dir / "curve" / (f"{split}-k{k}-limit{limit}" + "".join(f"_{n}{v}" for n, v in sorted(knobs.items())))


def training_stages(root: Path, run: str) -> list[str]:
    """The run's phases in training order (its method's stages); a run that trains none is refused."""
    from harness.runs import open_run

    method, _ = open_run(run, root, load=False)
    if not method.stages:
        raise BadInput(f"run {run!r} ({method.name}) trains no phases: it has no checkpoints to draw a curve from")
    return list(method.stages)


def evaluate_checkpoint(root: Path, run: str, stages: list[str], phase: str, step: int, split: str, k: int,
                        limit: int, knobs: dict[str, Any]) -> dict[str, Any] | None:
    """One row of the curve: the run as it was at `phase`'s checkpoint `step`, evaluated; None when the
    checkpoint went while it was being copied (pruned by the training run beside it)."""
    from harness.evaluate.run import evaluate_run
    from harness.runs import open_run

    run_dir = root / run
    (root / CURVE_COPIES).mkdir(parents=True, exist_ok=True)
    copy = Path(tempfile.mkdtemp(prefix=f"{run}-at-{phase}-{step}-", dir=root / CURVE_COPIES))
    try:
        later_stages = stages[stages.index(phase) + 1:]  # left out of the copy, so it loads this phase
        try:
            shutil.copytree(run_dir, copy, copy_function=os.link, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("results", "probe", "curve", *later_stages))
        except (shutil.Error, FileNotFoundError):  # a checkpoint saved or pruned meanwhile
            return None
        if step not in [saved for saved, _ in checkpoints(copy / phase)]:
            return None
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
        method, ctx = open_run(f"{CURVE_COPIES}/{copy.name}", root)
        metrics, out_dir = evaluate_run(method, ctx, ctx.task, split, k, limit, knobs)
        sampled = metrics.get("checkpoint")
        if isinstance(sampled, dict) and (sampled.get("phase"), sampled.get("step")) != (phase, step):
            raise RuntimeError(f"the copy of {run} at {phase}@{step} sampled "
                               f"{sampled.get('phase')}@{sampled.get('step')}")
        kept = curve_folder(run_dir, split, k, limit, knobs) / f"{phase}-step-{step}"
        shutil.rmtree(kept, ignore_errors=True)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(out_dir, kept)  # the samples stay with the run
        return curve_row(run, phase, step, metrics)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def curve_row(run: str, phase: str, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's row: its evaluation's figures, step figures and 95% intervals (a bootstrap over
    the problems, `metrics.json`'s `intervals`), so a curve says which of its differences are noise."""
    return {"phase": phase, "step": step, **{k: v for k, v in metrics.items() if not isinstance(v, dict | list)},
            **metrics.get("step_figures", {}), "intervals": metrics.get("intervals", {}), "run": run}


def kept_row(run_dir: Path, folder: Path, row: dict[str, Any]) -> dict[str, Any]:
    """A row already in the curve file, rebuilt from its checkpoint's kept evaluation where that is still
    beside the run (so a row written before a figure existed gains it, with no sampling); else as saved."""
    metrics = folder / f"{row['phase']}-step-{row['step']}" / "metrics.json"
    if not metrics.is_file():
        return row
    return curve_row(row.get("run", run_dir.name), row["phase"], row["step"], json.loads(metrics.read_text()))


def learning_curve(root: Path, run: str, phases: list[str] | None, split: str, k: int, limit: int,
                   knobs: dict[str, Any], out: Path | None = None, follow: bool = False,
                   on_row: Callable[[dict], None] = lambda row: None, poll_seconds: float = 30) -> dict[str, Any]:
    """Evaluate every checkpoint of `phases` (default: the run's last stage, the one its sampler loads)
    not yet in the curve file (`out`, default RUN/curve/SPLIT-kK-limitN[_KNOBvalue]/curve.json); with
    `follow`, until the phases are done. Returns the curve."""
    run_dir = root / run
    stages = training_stages(root, run)  # refuses a folder that is not a run
    chosen = phases or stages[-1:]
    unknown = [name for name in chosen if name not in stages]
    if unknown or [stages.index(name) for name in chosen] != sorted(stages.index(name) for name in chosen):
        raise BadInput(f"--phases must be stages of run {run!r} in training order ({', '.join(stages)}), "
                       f"not {','.join(chosen)}")
    out = out or curve_folder(run_dir, split, k, limit, knobs) / "curve.json"
    header = {"run": run, "phase": chosen[-1], "phases": chosen, "k": k, "limit": limit, "split": split,
              "knobs": [f"{name}={value}" for name, value in knobs.items()]}
    saved = read_curve(out)
    for key in ("k", "limit", "split", "knobs"):
        if saved and saved.get(key) != header[key]:
            raise BadInput(f"{out} holds a curve of {key} {saved.get(key)!r}, not {header[key]!r}: pass another --out")
    kept = curve_folder(run_dir, split, k, limit, knobs)
    rows = [kept_row(run_dir, kept, {"phase": saved.get("phase"), **row}) for row in saved.get("rows", [])]
    if saved and rows != saved.get("rows"):
        write_json_atomic(out, {**header, "rows": rows})
    while True:
        done = all(phase_done(run_dir / name) for name in chosen)  # read before listing the checkpoints
        seen = {(row["phase"], row["step"]) for row in rows}
        todo = [(name, step) for name in chosen if (run_dir / name).is_dir()
                for step, _ in checkpoints(run_dir / name) if (name, step) not in seen]
        for name, step in todo:
            row = evaluate_checkpoint(root, run, stages, name, step, split, k, limit, knobs)
            if row is None:
                continue
            rows.append(row)
            rows.sort(key=lambda r: (chosen.index(r["phase"]) if r["phase"] in chosen else -1, r["step"]))
            write_json_atomic(out, {**header, "rows": rows})
            on_row(row)
        if not follow or (done and not todo):
            break
        time.sleep(poll_seconds)
    if not rows:
        raise BadInput(f"run {run!r} has no checkpoints of {', '.join(chosen)} to evaluate")
    return {**saved, **header, "rows": rows}


def read_curve(path: Path) -> dict[str, Any]:
    """A curve file written before (continued by a re-run), or {}."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}: not a readable curve file ({error})") from None
