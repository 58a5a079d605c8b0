"""Scoring samples files and evaluating trained runs: one path from completions to metrics.

`score` and `eval` share it: completions are checked by the task's checker, verdicts are written
beside the samples, and `harness.metrics.summarize` turns them into the metrics object.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.context import RunContext
from harness.errors import BadInput
from harness.jsonl import iter_jsonl, read_append_log, write_json_atomic, write_jsonl_atomic
from harness.locks import exclusive
from harness.methods import Method
from harness.metrics import SampleResult, summarize
from harness.progress import console, progress_bar
from harness.training import DONE_MARKER, final_checkpoint
from tasks import Problem, Task


# ----------------------------------------------------------------------------------------- score
def problem_index(task: Task, task_ids: set[str]) -> dict[str, Problem]:
    """task_id -> problem for the ids asked about, loading only the splits their ids name when possible."""
    named_splits = {tid.split("/")[1] for tid in task_ids if tid.count("/") >= 2 and tid.split("/")[1] in task.splits}
    splits = named_splits if named_splits and all(tid.count("/") >= 2 for tid in task_ids) else set(task.splits)
    index: dict[str, Problem] = {}
    for split in sorted(splits):
        for problem in task.problems(split):
            index[problem["task_id"]] = problem
    return index


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Samples from a JSONL file, a gzipped one (`.jsonl.gz`), or an evalplus samples folder
    (`<dir>/<task_id with "/" as "_">/<n>.py`, each file a whole program: evalplus' `solution`)."""
    if path.is_dir():
        return _read_sample_folder(path)
    samples = []
    for line_number, record in enumerate(iter_jsonl(path), start=1):
        if "task_id" not in record:
            raise BadInput(f"{path}: sample {line_number} has no task_id")
        text = record.get("completion", record.get("solution"))
        if not isinstance(text, str):
            raise BadInput(f"{path}: sample {line_number} has no string 'completion' (or 'solution')")
        samples.append({"task_id": str(record["task_id"]), "completion": text})
    return samples


def _sample_number(path: Path) -> tuple[int, Any]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _read_sample_folder(path: Path) -> list[dict[str, Any]]:
    """evalplus' `load_solutions` folder layout: one sub-folder per task, named after its task_id with
    "/" written as "_" (read back as evalplus does: every "_" becomes "/"), holding `<n>.py` files;
    other files are ignored, as evalplus ignores them. Tasks in name order, files by number."""
    samples = []
    for task_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        task_id = task_dir.name.replace("_", "/")
        for file in sorted((f for f in task_dir.iterdir() if f.is_file() and f.suffix == ".py"), key=_sample_number):
            try:
                text = file.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"{file}: not UTF-8 text") from None
            samples.append({"task_id": task_id, "completion": text, "_path": str(file)})
    return samples


def output_paths(samples_path: Path) -> tuple[Path, Path]:
    """(our verdicts file, evalplus' eval_results.json) for a samples input: `X.jsonl` / `X.jsonl.gz`
    -> `X.verdicts.jsonl` and `X_eval_results.json` beside it (evalplus' name for a file); a folder
    -> `verdicts.jsonl` and `eval_results.json` inside it (evalplus' name for a folder)."""
    if samples_path.is_dir():
        return samples_path / "verdicts.jsonl", samples_path / "eval_results.json"
    name = samples_path.name
    for suffix in (".jsonl.gz", ".gz", ".jsonl"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = samples_path.stem
    return samples_path.with_name(name + ".verdicts.jsonl"), samples_path.with_name(name + "_eval_results.json")


def evalplus_results(task: Task, problems: dict[str, Problem], checked: list[dict[str, Any]]) -> dict[str, Any]:
    """evalplus' eval_results.json for checked code samples: {"date", "hash", "eval": {task_id: [{task_id,
    solution, base_status, plus_status, base_fail_tests, plus_fail_tests}]}}, samples in input order.

    `solution` is the program that ran (after our code extraction); `*_fail_tests` hold the one failing
    input, as evalplus' default fast check does; `plus_status` is None where the plus inputs were not run
    (the task has none: `humaneval`, or a base input failed first); `hash` is the md5 of the dataset
    file as evalplus computes it (None for `humaneval`, whose problems are not an evalplus file)."""
    from datetime import datetime

    from tasks.code import extract_code

    hash_of = getattr(task, "dataset_hash", None)
    results: dict[str, Any] = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"),
                               "hash": hash_of() if callable(hash_of) else None, "eval": {}}
    for row in checked:
        problem = problems[row["task_id"]]
        program, _ = extract_code(problem, row["completion"])
        if "base_status" in row:
            base_status, plus_status = row["base_status"], row["plus_status"]
        else:  # humaneval: base tests only (evalplus' --base-only shape)
            timed_out = str(row.get("reason", "")).startswith("timed out")
            base_status, plus_status = "pass" if row["passed"] else ("timeout" if timed_out else "fail"), None
        fail_tests: dict[str, list] = {"base": [], "plus": []}
        failed = row.get("failed_input")
        if failed:
            stage, index = failed
            inputs = problem.get(f"{stage}_input") or []
            if 0 <= index < len(inputs):
                fail_tests[stage] = [inputs[index]]  # the file's JSON-friendly form, as evalplus serialises MBPP's
        results["eval"].setdefault(row["task_id"], []).append({
            "task_id": row["task_id"], "solution": program, "base_status": base_status, "plus_status": plus_status,
            "base_fail_tests": fail_tests["base"], "plus_fail_tests": fail_tests["plus"],
        })
    return results


def check_samples(task: Task, problems: dict[str, Problem], samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples with their verdicts attached (passed, answer, canonical, reason; code plus tasks also
    base_passed, plus_passed, base_status, plus_status, failed_input)."""
    verdicts = task.check_many([(problems[s["task_id"]], s["completion"]) for s in samples])
    return [{**sample, **verdict.to_json()} for sample, verdict in zip(samples, verdicts, strict=True)]


def metrics_of(checked: list[dict[str, Any]], ks: list[int] | None) -> dict[str, Any]:
    results = [SampleResult(r["task_id"], r["completion"], bool(r["passed"]), r.get("canonical"), r.get("answer"),
                            None if r.get("base_passed") is None else bool(r["base_passed"]))
               for r in checked]
    return summarize(results, ks)


def score_file(task: Task, samples_path: Path, ks: list[int] | None) -> tuple[dict[str, Any], Path]:
    samples = read_samples(samples_path)
    if not samples:
        raise BadInput(f"{samples_path}: no samples")
    ids = {s["task_id"] for s in samples}
    problems = problem_index(task, ids)
    unknown = sorted(ids - set(problems))
    if unknown:
        raise BadInput(f"{samples_path}: unknown task_id {unknown[0]!r} for task {task.name!r}"
                       + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    started = time.time()
    checked = check_samples(task, problems, samples)
    seconds = time.time() - started
    verdicts_path, evalplus_path = output_paths(samples_path)
    write_jsonl_atomic(verdicts_path, checked)
    if task.kind == "code":
        write_json_atomic(evalplus_path, evalplus_results(task, problems, checked))
    metrics = {"task": task.name, **metrics_of(checked, ks), "scoring_seconds": round(seconds, 3)}
    split_ids = {p["task_id"] for p in problems.values()}
    missing = len(split_ids - ids)
    if missing:
        console.print(f"[yellow]warning:[/] {missing} problems of the split(s) have no samples; scored the {len(ids)} present")
    counts = Counter(s["task_id"] for s in samples)
    if ks and any(k > min(counts.values()) for k in ks):
        console.print(f"[yellow]warning:[/] some problems have fewer samples ({min(counts.values())}) than a requested k; "
                      "pass@k averages over problems with at least k samples")
    return metrics, verdicts_path


# ----------------------------------------------------------------------------------------- eval
def knob_defaults(method: Method, ctx: RunContext) -> dict[str, Any]:
    """Run-config eval settings that the method's SampleKnobs accept (temperature, top_p, ...)."""
    fields = set(method.SampleKnobs.__dataclass_fields__)
    return {k: v for k, v in asdict(ctx.config.eval).items() if k in fields}


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


def git_revision() -> dict[str, Any]:
    """The source's commit and whether tracked files differ from it; nulls outside a git checkout."""
    source = Path(__file__).parent

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=source)
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "--verify", "HEAD")
    if head is None or head.returncode != 0:
        return {"git_revision": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return {"git_revision": head.stdout.strip(), "git_dirty": dirty}


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def problems_sha256(problems: list[Problem]) -> str:
    """The evaluated problem set: the same hash means the same problems, prompts and references."""
    return hashlib.sha256(json.dumps(problems, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def evaluated_checkpoint(method: Method, ctx: RunContext) -> dict[str, Any] | None:
    """The weights being sampled: the method's own record (methods with several candidate
    checkpoints, e.g. LaDiR) or its last phase's final checkpoint, with the sha256 of its weight files."""
    record = getattr(method, "checkpoint", None)
    if record is None:
        for phase in reversed(method.stages):
            try:
                step, path = final_checkpoint(ctx.run_dir / phase)
            except FileNotFoundError:
                continue
            record = {"phase": phase, "step": step, "path": str(path)}
            break
    if record is None:
        return None
    weights = sorted(Path(record["path"]).rglob("*.safetensors"))
    return {"phase": record["phase"], "step": record["step"], "sha256": sha256_of(weights) if weights else None}


def _manifest(ctx: RunContext, extra: dict[str, Any]) -> dict[str, Any]:
    versions = {}
    for package in ("ladir-bench", "torch", "transformers", "accelerate", "datasets", "evalplus", "math-verify",
                    "typer"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"config": ctx.config.to_dict(), "seed": ctx.seed, "versions": versions, **git_revision(),
            "python": platform.python_version(), "device": str(ctx.device), **extra}


def training_minutes(run_dir: Path) -> float | None:
    """Wall-clock minutes the run's finished phases trained (their DONE markers' `elapsed_s`, resumptions
    included; the shared base LM is not counted); None if a phase predates the record."""
    seconds = []
    for marker in sorted(run_dir.glob(f"*/{DONE_MARKER}")):
        last = json.loads(marker.read_text()).get("last") or {}
        seconds.append(last.get("elapsed_s"))
    if not seconds or any(s is None for s in seconds):
        return None
    return round(sum(seconds) / 60, 2)


def _sample_missing(method: Method, sample: Callable[..., list[list[str]]], ctx: RunContext, task: Task,
                    problems: list[Problem], k: int, resolved: dict[str, Any], seed: int,
                    samples_path: Path, start: Callable[[], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Sample (`sample`: the method's own sampler or another engine's, with its contract) and check the
    problems samples.jsonl does not hold all k samples of; task_id -> its k rows. `start`, when given,
    readies the engine untimed, and only when there is something left to sample.

    The file is an append log: a re-run keeps the problems that have all k samples, drops any partial
    one and a line torn by a kill (rewriting the file atomically), and continues."""
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
    if todo and start is not None:
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
            started = time.time()
            completions_per_problem = sample(group, k, **resolved)
            seconds_per_sample = round((time.time() - started) / (k * len(group)), 5)
            if len(completions_per_problem) != len(group) or any(len(c) != k for c in completions_per_problem):
                raise RuntimeError(f"method {method.name} returned {[len(c) for c in completions_per_problem]} samples "
                                   f"for {len(group)} problems, expected {k} each")
            pairs = [(p, c) for p, cs in zip(group, completions_per_problem) for c in cs]
            verdicts = task.check_many(pairs)
            rows = [{"task_id": p["task_id"], "completion": c, **v.to_json(), "seconds": seconds_per_sample}
                    for (p, c), v in zip(pairs, verdicts, strict=True)]
            out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            out.flush()
            os.fsync(out.fileno())
            for problem, first in zip(group, range(0, len(rows), k)):
                done[problem["task_id"]] = rows[first:first + k]
            bar.update(len(group), info=f"{sum(r['passed'] for r in rows)}/{len(rows)} correct")

    return done


def evaluate_run(method: Method, ctx: RunContext, task: Task, split: str, k: int, limit: int | None,
                 knobs: dict[str, Any], seed: int | None = None, engine: str = "hf") -> tuple[dict[str, Any], Path]:
    """Draw k samples per problem, check them, write samples.jsonl / metrics.json / manifest.json.

    `engine` "hf" samples with the method itself (its weights loaded); "vllm" samples an AR-based
    method through vLLM (harness.vllm_engine; the run opened without loading its weights).

    samples.jsonl is appended one finished problem at a time; a re-run keeps the problems that have
    all k samples, drops any partial one, and continues, so an interruption loses nothing and
    duplicates nothing.
    """
    from harness.vllm_engine import VllmSampler, check_engine, engine_record

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
        done = _sample_missing(method, vllm_sampler or method.sample, ctx, task, problems, k, resolved, seed,
                               out_dir / "samples.jsonl", vllm_sampler and vllm_sampler.start)
        wanted = {p["task_id"] for p in problems}
        checked = [r for tid, rows in done.items() if tid in wanted for r in rows]
        metrics = {"task": task.name, "split": split, "run": ctx.run_dir.name, "method": method.name,
                   "k": k, "knobs": {**defaults, **resolved}, "seed": seed, **metrics_of(checked, None)}
        if engine != "hf":  # a column in `ladir-bench table`, so the two engines' rows are told apart
            metrics["engine"] = engine
            if vllm_sampler.startup_seconds is not None:  # not in samples_per_s
                metrics["engine_startup_s"] = vllm_sampler.startup_seconds
        evaluated = evaluated_checkpoint(method, ctx)
        if evaluated is not None:
            metrics["checkpoint"] = evaluated
        training = training_minutes(ctx.run_dir)
        if training is not None:
            metrics["train_minutes"] = training
        # From the per-sample times stored in samples.jsonl, so a resumed evaluation reports all of it.
        total_seconds = sum(r.get("seconds", 0.0) for r in checked)
        if total_seconds:
            metrics["samples_per_s"] = round(len(checked) / total_seconds, 3)
        write_json_atomic(out_dir / "metrics.json", metrics)
        write_json_atomic(out_dir / "manifest.json", _manifest(ctx, {"task": task.name, "split": split, "k": k,
                                                                     "limit": limit, "knobs": resolved, "eval_seed": seed,
                                                                     "checkpoint": evaluated,
                                                                     "engine": engine_record(engine),
                                                                     "problems_sha256": problems_sha256(problems),
                                                                     "checker": task.checker_settings()}))
    return metrics, out_dir
