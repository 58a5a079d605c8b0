"""Evaluating a trained run (`ladir-bench eval`): sample k completions per problem, resumably, in
one results folder per setting, then score them (`harness.evaluate.score`) and stamp the manifest
(`harness.evaluate.provenance`). metrics.json also records the compute: the run's training FLOPs and
tokens, phase by phase (the shared base included), and the sampling FLOPs and tokens per sample
(harness.compute).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.compute import ComputeCounter, training_compute
from harness.config import RunConfig
from harness.context import RunContext
from harness.errors import BadInput
from harness.evaluate.provenance import evaluated_checkpoint, manifest, problems_sha256, training_minutes
from harness.evaluate.score import metrics_of
from harness.jsonl import read_append_log, write_json_atomic, write_jsonl_atomic
from harness.locks import exclusive
from harness.methods import Method
from harness.progress import console, progress_bar
from harness.revision import git_revision
from tasks import Problem, Task


def knob_defaults(method: Method, ctx: RunContext) -> dict[str, Any]:
    """Run-config eval settings that the method's SampleKnobs accept (temperature, top_p, ...)."""
    return config_knobs(method.SampleKnobs, ctx.config)


def config_knobs(knobs_class: type, config: RunConfig) -> dict[str, Any]:
    """`knob_defaults` from a method's SampleKnobs class and a run's config (no method built)."""
    fields = set(knobs_class.__dataclass_fields__)
    return {k: v for k, v in asdict(config.eval).items() if k in fields}


def results_dir(ctx: RunContext, task: Task, split: str, k: int, knobs: dict[str, Any], seed: int,
                checkpoint: dict[str, Any] | None = None, engine: str = "hf") -> Path:
    """One folder per (task, split, k, non-default sampling knobs, seed, sampling engine, and the
    checkpoint for methods with several, e.g. LaDiR's stage1/stage2): evaluations never mix. The
    default engine and seed leave no mark, so folders written before they were keys keep their names."""
    parts = [f"k{k}"] + [f"{name}{value}" for name, value in sorted(knobs.items())]
    if seed != ctx.seed:
        parts.append(f"seed{seed}")
    if engine != "hf":
        parts.append(f"engine-{engine}")
    folder = f"{task.name}-{split}"
    if checkpoint is not None:
        folder += f"-{checkpoint['phase']}-step{checkpoint['step']}"
    return ctx.run_dir / "results" / folder / "_".join(parts)


SAMPLED_BY = "sampled_by.jsonl"  # one line per sitting that drew samples: its git revision, how many problems


def sampled_by(out_dir: Path) -> list[dict[str, Any]]:
    """The sittings that drew this folder's samples (the manifest's own revision is the code that last
    scored them, which a re-run of a finished evaluation updates)."""
    path = out_dir / SAMPLED_BY
    return read_append_log(path)[0] if path.is_file() else []


def _set_aside_other_weights(out_dir: Path, checkpoint: dict[str, Any] | None) -> None:
    """Samples a sitting drew from other weights than `checkpoint` (a run evaluated while it trained,
    then trained on: the folder's name is the same for every checkpoint of most methods) are renamed
    aside, so they are neither resumed nor scored as the new weights'. Sittings older than the record
    of their weights are taken as they are."""
    samples_path = out_dir / "samples.jsonl"
    if checkpoint is None or not samples_path.is_file():
        return
    drawn_from = {(s["checkpoint"].get("phase"), s["checkpoint"].get("step"), s["checkpoint"].get("sha256"))
                  for s in sampled_by(out_dir) if s.get("checkpoint")}
    if not drawn_from - {(checkpoint["phase"], checkpoint["step"], checkpoint["sha256"])}:
        return
    aside = out_dir / f"other-weights-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    aside.mkdir()
    for name in ("samples.jsonl", SAMPLED_BY, "metrics.json", "manifest.json"):
        if (out_dir / name).is_file():
            os.replace(out_dir / name, aside / name)
    console.print(f"{out_dir}: its samples were drawn from other weights than {checkpoint['phase']} step "
                  f"{checkpoint['step']}'s; moved to {aside.name}/ and sampled anew")


def _sample_missing(method: Method, sample: Callable[..., list[list[str]]], ctx: RunContext, task: Task,
                    problems: list[Problem], k: int, resolved: dict[str, Any], seed: int,
                    samples_path: Path, start: Callable[[], None] | None = None,
                    checkpoint: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Sample (`sample`: the method's own sampler or another engine's, with its contract) and check the
    problems samples.jsonl does not hold all k samples of; task_id -> its k rows. `start`, when given,
    readies the engine untimed, and only when there is something left to sample. Each row records
    its group's mean seconds, backbone tokens and FLOPs per sample (an engine outside this process,
    vLLM, leaves the last two out: its forwards are not seen).

    The file is an append log: a re-run keeps the problems that have all k samples, drops any partial
    one and a line torn by a kill (rewriting the file atomically), and continues. Each sitting records
    the weights it sampled (`checkpoint`), so a later one on other weights starts over."""
    done: dict[str, list[dict[str, Any]]] = {}
    if samples_path.is_file():
        records, torn = read_append_log(samples_path)
        for line_number, record in enumerate(records, start=1):
            if not isinstance(record.get("task_id"), str):
                raise BadInput(f"{samples_path}: sample {line_number} has no task_id; move the file away to resample")
            done.setdefault(record["task_id"], []).append(record)
        complete = {tid: rows for tid, rows in done.items() if len(rows) == k}
        if torn or len(complete) != len(done):
            write_jsonl_atomic(samples_path, [r for rows in complete.values() for r in rows])
        done = complete
    todo = [p for p in problems if p["task_id"] not in done]
    if done:
        console.print(f"resuming: {len(done)} problems already sampled, {len(todo)} to go")
    if todo:  # which code draws these samples: a resumed or re-scored evaluation keeps each sitting's
        with (samples_path.parent / SAMPLED_BY).open("a", encoding="utf-8") as log:
            log.write(json.dumps({**git_revision(), "problems": len(todo), "checkpoint": checkpoint,
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        if start is not None:
            start()

    # Problems go to the method in groups that fill about one sampling batch (the method fills its
    # batches across the group's problems); sample i of a problem still depends only on (seed, task_id,
    # i) (harness.sampling), and each group is written once finished.
    group_size = max(1, int(resolved.get("batch_size", ctx.config.eval.batch_size)) // k)
    method.eval_seed = seed
    with progress_bar(f"eval {task.name}", total=len(problems), completed=len(problems) - len(todo)) as bar, \
            samples_path.open("a", encoding="utf-8") as out:
        for start in range(0, len(todo), group_size):
            group = todo[start:start + group_size]
            started, counter = time.time(), ComputeCounter()
            with counter:
                completions_per_problem = sample(group, k, **resolved)
            seconds_per_sample = round((time.time() - started) / (k * len(group)), 5)
            compute = {"forward_tokens": counter.total.forward_tokens / (k * len(group)),
                       "flops": counter.total.flops / (k * len(group))} if counter.total.forward_tokens else {}
            if len(completions_per_problem) != len(group) or any(len(c) != k for c in completions_per_problem):
                raise RuntimeError(f"method {method.name} returned {[len(c) for c in completions_per_problem]} samples "
                                   f"for {len(group)} problems, expected {k} each")
            pairs = [(p, c) for p, cs in zip(group, completions_per_problem) for c in cs]
            verdicts = task.check_many(pairs)
            rows = [{"task_id": p["task_id"], "completion": c, **v.to_json(), "seconds": seconds_per_sample, **compute}
                    for (p, c), v in zip(pairs, verdicts, strict=True)]
            out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            out.flush()
            os.fsync(out.fileno())
            for problem, first in zip(group, range(0, len(rows), k)):
                done[problem["task_id"]] = rows[first:first + k]
            bar.update(len(group), info=f"{sum(r['passed'] for r in rows)}/{len(rows)} correct")

    return done


def base_phase(ctx: RunContext) -> Path | None:
    """The base phase the run's weights started from, whose training counts toward the run's; None for
    a pretrained backbone (its pretraining is not ours to count) or a method trained from scratch."""
    from harness.backbone import SCRATCH

    objective = ctx.backbone.objective
    return None if objective in ("pretrained", SCRATCH) else ctx.backbone.base_directory(objective)


def sampling_compute(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean backbone tokens and FLOPs per sample (`sample_tokens`, `sample_flops`), when every row has them."""
    if not rows or any("flops" not in r for r in rows):
        return {}
    return {"sample_tokens": round(sum(r["forward_tokens"] for r in rows) / len(rows), 2),
            "sample_flops": sum(r["flops"] for r in rows) / len(rows)}


def evaluate_run(method: Method, ctx: RunContext, task: Task, split: str, k: int, limit: int | None,
                 knobs: dict[str, Any], seed: int | None = None, engine: str = "hf") -> tuple[dict[str, Any], Path]:
    """Draw k samples per problem, check them, write samples.jsonl / metrics.json / manifest.json.

    `engine` "hf" samples with the method itself (its weights loaded); "vllm" samples an AR-based
    method through vLLM (harness.engines.vllm_engine; the run opened without loading its weights).

    samples.jsonl is appended one finished problem at a time; a re-run keeps the problems that have
    all k samples, drops any partial one, and continues, so an interruption loses nothing and
    duplicates nothing.
    """
    from harness.engines.vllm_engine import VllmSampler, check_engine, engine_record
    from harness.evaluate.steps import step_figures

    seed = ctx.seed if seed is None else seed
    check_engine(engine, method)
    resolved = {**knob_defaults(method, ctx), **knobs}
    settings = method.sample_knobs(resolved)  # validate before any work
    problems = task.problems(split)[: limit if limit is not None else None]
    if not problems:
        raise BadInput(f"task {task.name!r} split {split!r} has no problems")
    vllm_sampler = None if engine == "hf" else VllmSampler(method, seed, problems, settings.max_new_tokens,
                                                           ctx.run_dir.name)
    defaults = asdict(method.SampleKnobs())
    checkpoint = getattr(method, "checkpoint", None)  # which weights are sampled, where a method has several
    out_dir = results_dir(ctx, task, split, k, {n: v for n, v in resolved.items() if defaults.get(n) != v}, seed,
                          checkpoint, engine)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir, "results folder"):
        evaluated = evaluated_checkpoint(method, ctx)
        _set_aside_other_weights(out_dir, evaluated)
        done = _sample_missing(method, vllm_sampler or method.sample, ctx, task, problems, k, resolved, seed,
                               out_dir / "samples.jsonl", vllm_sampler and vllm_sampler.start, evaluated)
        wanted = {p["task_id"] for p in problems}
        checked = [r for tid, rows in done.items() if tid in wanted for r in rows]
        metrics = {"task": task.name, "split": split, "run": ctx.run_dir.name, "method": method.name,
                   "k": k, "knobs": {**defaults, **resolved}, "seed": seed, **metrics_of(checked, None)}
        figures = step_figures(task, {p["task_id"]: p for p in problems}, checked)
        if figures is not None:  # a task that checks steps: how often the method's own steps are valid
            metrics["step_figures"] = figures
        if engine != "hf":  # a column in `ladir-bench table`, so the two engines' rows are told apart
            metrics["engine"] = engine
            if vllm_sampler.startup_seconds is not None:  # not in samples_per_s
                metrics["engine_startup_s"] = vllm_sampler.startup_seconds
        if evaluated is not None:
            metrics["checkpoint"] = evaluated
        if hasattr(method, "metrics_beside"):  # a method's own figures for the same problems (LD4LG's ceiling)
            metrics.update(method.metrics_beside(task, split, problems))
        training = training_minutes(ctx.run_dir)
        if training is not None:
            metrics["train_minutes"] = training
        # From the per-sample times stored in samples.jsonl, so a resumed evaluation reports all of it.
        total_seconds = sum(r.get("seconds", 0.0) for r in checked)
        if total_seconds:
            metrics["samples_per_s"] = round(len(checked) / total_seconds, 3)
        metrics.update(sampling_compute(checked))
        trained = training_compute(ctx.run_dir, base_phase(ctx))
        metrics.update({"train_flops": trained["flops"], "train_tokens": trained["forward_tokens"],
                        "train_compute": trained})
        record = manifest(ctx, {"task": task.name, "split": split, "k": k, "limit": limit, "knobs": resolved,
                                "eval_seed": seed, "checkpoint": evaluated, "engine": engine_record(engine),
                                "problems_sha256": problems_sha256(problems), "checker": task.checker_settings(),
                                "sampled_by": sampled_by(out_dir)})
        if not _holds_already(out_dir, metrics, record, defaults):
            write_json_atomic(out_dir / "metrics.json", metrics)
            write_json_atomic(out_dir / "manifest.json", record)
    return metrics, out_dir


def _holds_already(out_dir: Path, metrics: dict[str, Any], record: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether `out_dir` already holds this evaluation as scored now: the same figures (a knob newer than
    its metrics.json reads as its default) from the same samples (the same sittings of the same weights
    on the same problems, checked the same way). Re-scoring a finished evaluation then writes nothing,
    and its files keep the revision that made them; a figure the code now computes otherwise rewrites both."""
    try:
        held = json.loads((out_dir / "metrics.json").read_text())
        held_record = json.loads((out_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    held["knobs"] = {**defaults, **(held.get("knobs") or {})}

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    return canonical(held) == canonical(metrics) and all(
        canonical(held_record.get(key)) == canonical(record[key])
        for key in ("task", "split", "k", "limit", "eval_seed", "checkpoint", "engine", "problems_sha256", "checker",
                    "sampled_by"))
