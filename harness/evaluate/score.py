"""Scoring samples files (`ladir-bench score`, and the last step of `eval`): completions checked by the
task's checker, verdicts written beside the samples (and evalplus' eval_results.json for code), and
`harness.evaluate.metrics.summarize` turning them into the metrics object.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness.errors import BadInput
from harness.evaluate.metrics import SampleResult, summarize
from harness.jsonl import iter_jsonl, write_json_atomic, write_jsonl_atomic
from harness.progress import console
from tasks import Problem, Task


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
    """`summarize`'s metrics of checked samples, with each rate's 95% bootstrap interval over problems and
    lm-eval's standard error (`intervals`, `stderr`: harness.evaluate.stats)."""
    from harness.evaluate.stats import interval_record

    results = [SampleResult.from_record(r) for r in checked]
    metrics = summarize(results, ks)
    return {**metrics, **interval_record(results, metrics)}


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
