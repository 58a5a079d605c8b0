"""Error bars: every figure as a mean with a 95% bootstrap interval, and paired comparisons that say
which differences between two methods are real.

The unit is the problem: a figure (pass@k, chain_valid@k, a share of samples) is a mean over problems
of that problem's own value (`per_problem`), so the interval resamples problems (Efron & Tibshirani
1993, percentile interval). Where a configuration was trained with several seeds, the bootstrap is
hierarchical: resample the seeds' problem sets, then the seeds sharing a set, then the problems within
it (a seed's test split is a function of its seed, so seeds usually bring problem sets of their own;
seeds evaluated on one set are crossed with its problems). `stderr` is lm-evaluation-harness' standard
error of a mean, sd / sqrt(n) over the problems' values, which sees problem sampling only.

A paired comparison (`paired`) resamples the same problems for both methods, so the difference's
interval is free of which problems happened to be drawn; a difference is `significant` when its 95%
interval excludes 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import BadInput
from harness.evaluate.metrics import (
    COUNTED,
    COUNTS,
    SHARES,
    SampleResult,
    carries,
    group_by_problem,
    per_problem_scores,
)
from harness.jsonl import iter_jsonl

LEVEL = 0.95


@dataclass(frozen=True)
class Cell:
    """One table cell: the mean over problems (and seeds), its 95% interval and lm-eval's stderr."""

    mean: float
    lo: float
    hi: float
    stderr: float
    n_problems: int
    n_seeds: int


@dataclass(frozen=True)
class Paired:
    """mean(a) - mean(b) on the problems both were evaluated on, its 95% interval, and whether it excludes 0."""

    diff: float
    lo: float
    hi: float
    significant: bool
    n_problems: int


# ------------------------------------------------------------------------------------ reading results
_VERDICT_FILES = ("samples.jsonl", "samples.jsonl.gz", "verdicts.jsonl")
_FILE_SUFFIXES = (".samples.jsonl.gz", ".samples.jsonl", ".verdicts.jsonl", ".jsonl.gz", ".jsonl")


def _verdicts_path(results: Path) -> Path:
    if results.is_file():
        return results
    for name in _VERDICT_FILES:
        if (results / name).is_file():
            return results / name
    raise BadInput(f"{results}: no checked samples ({', '.join(_VERDICT_FILES)}); "
                   "an eval results folder or a verdicts file from `ladir-bench score` is needed")


def _beside(results: Path, kind: str) -> Path:
    """`manifest.json` / `metrics.json` of an eval folder, or `NAME.<kind>.json` beside `NAME.samples.jsonl`."""
    if results.is_dir():
        return results / f"{kind}.json"
    name = results.name
    for suffix in _FILE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return results.with_name(f"{name}.{kind}.json")


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}: malformed JSON ({error.msg})") from None


def read_results(results: Path) -> list[SampleResult]:
    """The checked samples of an eval results folder (its samples.jsonl) or of a verdicts file.

    An eval folder's samples.jsonl is appended in problem order and may hold more problems than its
    last evaluation counted (a later `--limit` smaller than an earlier one): only the first
    `n_problems` of metrics.json are read, the problems that evaluation scored."""
    path = _verdicts_path(Path(results))
    rows = []
    for number, record in enumerate(iter_jsonl(path), start=1):
        if not {"task_id", "completion", "passed"} <= record.keys():
            raise BadInput(f"{path}: row {number} is not a checked sample (task_id, completion, passed)")
        rows.append(SampleResult.from_record(record))
    metrics = _read_json(_beside(Path(results), "metrics"))
    if metrics and isinstance(metrics.get("n_problems"), int):
        kept = set(list(dict.fromkeys(r.task_id for r in rows))[: metrics["n_problems"]])
        rows = [r for r in rows if r.task_id in kept]
    if not rows:
        raise BadInput(f"{path}: no checked samples")
    return rows


def per_problem(results_dir: Path, metric: str = "pass@1") -> pd.Series:
    """The metric on each problem of an eval results folder (or verdicts file), indexed by task_id:
    the unbiased pass@k / chain_valid@k from that problem's n samples and c successes, or its share
    of samples (`uses_given_numbers`), or its count of distinct correct solutions (`diversity`). Its
    mean is the figure `summarize` reports."""
    return _scores(read_results(Path(results_dir)), metric, results_dir)


def _scores(results: Sequence[SampleResult], metric: str, source: Path) -> pd.Series:
    """`per_problem` of results already read from `source`."""
    try:
        scores = per_problem_scores(group_by_problem(results), metric)
    except ValueError as error:
        raise BadInput(str(error)) from None
    name = metric.partition("@")[0]
    if name not in COUNTS and not carries(results, COUNTED.get(name, name)):
        raise BadInput(f"{source}: its task does not record {COUNTED.get(name, name)!r}, so there is no {metric}")
    if not scores:
        raise BadInput(f"{source}: no problem has enough samples for {metric}")
    return pd.Series(scores, name=metric, dtype=float).rename_axis("task_id")


def problem_set(results_dir: Path) -> str | None:
    """What the task_ids of an evaluation name: its task, split and split seed (and task options) from
    its manifest, so that `countdown4/test/17` of two seeds' test splits is not taken for one problem.
    None without a manifest (a `score` verdicts file): task_ids are then taken at their word."""
    manifest = _read_json(_beside(Path(results_dir), "manifest"))
    if manifest is None:
        return None
    config = manifest.get("config") or {}
    task = manifest.get("task", config.get("task"))
    options = config.get("task_options", {}) if task == config.get("task") else {}
    return json.dumps({"task": task, "split": manifest.get("split"), "seed": manifest.get("seed", config.get("seed")),
                       "options": options}, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------ the bootstrap
@dataclass(frozen=True)
class _Unit:
    """One evaluation (one training seed): its problem set and its per-problem values."""

    problems: str | None
    values: pd.Series


def _units(results_dirs: Sequence[Path], metric: str) -> list[_Unit]:
    if not results_dirs:
        raise BadInput("no results folders given")
    return [_Unit(problem_set(Path(d)), per_problem(Path(d), metric)) for d in results_dirs]


def _strata(sides: Sequence[Sequence[_Unit]]) -> list[list[np.ndarray]]:
    """Per problem set shared by every side: one (seeds x problems) matrix per side, on the problems
    every seed of every side has there."""
    keys = [key for key in dict.fromkeys(u.problems for u in sides[0])
            if all(any(u.problems == key for u in side) for side in sides)]
    strata = []
    for key in keys:
        members = [[u.values for u in side if u.problems == key] for side in sides]
        common = sorted(set.intersection(*(set(v.index) for group in members for v in group)))
        if common:
            strata.append([np.array([v.loc[common].to_numpy() for v in group]) for group in members])
    return strata


def _hierarchical(strata: list[list[np.ndarray]], n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """(point, replicates) of mean(side 0) - mean(side 1) (or mean(side 0) with one side), where a mean
    is over problem sets of the mean over their seeds of the mean over their problems. A replicate
    resamples the problem sets, then within each the seeds of each side (the i-th seeds of the two
    sides drawn together where the sides have as many: they share a base checkpoint) and the problems,
    the same problems for both sides."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([sum(sign * m.mean() for sign, m in zip((1, -1), sides)) for sides in strata]))
    per_stratum = np.empty((n_boot, len(strata)))
    for g, sides in enumerate(strata):
        n_problems = sides[0].shape[1]
        problem_weights = rng.multinomial(n_problems, np.full(n_problems, 1 / n_problems), size=n_boot)
        seed_draws: dict[int, np.ndarray] = {}
        value = np.zeros(n_boot)
        for sign, matrix in zip((1, -1), sides):
            n_seeds = matrix.shape[0]
            if n_seeds not in seed_draws:
                seed_draws[n_seeds] = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)
            seed_means = problem_weights @ matrix.T / n_problems  # (n_boot, seeds)
            value += sign * (seed_draws[n_seeds] * seed_means).sum(axis=1) / n_seeds
        per_stratum[:, g] = value
    n_strata = len(strata)
    strata_weights = rng.multinomial(n_strata, np.full(n_strata, 1 / n_strata), size=n_boot)
    return point, (strata_weights * per_stratum).sum(axis=1) / n_strata


def _percentiles(replicates: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def stderr_of_mean(values: np.ndarray) -> float:
    """lm-evaluation-harness' `mean_stderr`: the sample standard deviation over sqrt(n)."""
    values = np.asarray(values, dtype=float)
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def _check_boot(n_boot: int) -> None:
    if n_boot < 1:
        raise BadInput(f"n_boot must be >= 1, got {n_boot}")


def _cell_of(units: list[_Unit], n_boot: int, seed: int) -> Cell:
    _check_boot(n_boot)
    strata = _strata([units])
    if not strata:
        raise BadInput("the seeds' evaluations share no problems")
    point, replicates = _hierarchical(strata, n_boot, seed)
    lo, hi = _percentiles(replicates)
    pooled = np.concatenate([sides[0].mean(axis=0) for sides in strata])  # per problem, over its seeds
    return Cell(point, lo, hi, stderr_of_mean(pooled), len(pooled), len(units))


def cell(results_dirs: list[Path], metric: str = "pass@1", n_boot: int = 2000, seed: int = 0) -> Cell:
    """One configuration's figure over its evaluations, one folder per training seed: the mean over
    problems (and seeds), its 95% hierarchical bootstrap interval and lm-eval's stderr."""
    return _cell_of(_units(results_dirs, metric), n_boot, seed)


def paired(a_dirs: list[Path], b_dirs: list[Path], metric: str = "pass@1", n_boot: int = 2000,
           seed: int = 0) -> Paired:
    """A against B on the problems both were evaluated on (seeds of each, as in `cell`): the paired
    bootstrap of mean(a) - mean(b), the same problems resampled for both."""
    return _paired_of(_units(a_dirs, metric), _units(b_dirs, metric), n_boot, seed)


def _paired_of(a_units: list[_Unit], b_units: list[_Unit], n_boot: int, seed: int) -> Paired:
    _check_boot(n_boot)
    strata = _strata([a_units, b_units])
    if not strata:
        raise BadInput("the two configurations were evaluated on no common problems (same task, split and split seed)")
    diff, replicates = _hierarchical(strata, n_boot, seed)
    lo, hi = _percentiles(replicates)
    return Paired(diff, lo, hi, bool(lo > 0 or hi < 0), sum(sides[0].shape[1] for sides in strata))


def format_interval(mean: float, lo: float, hi: float, digits: int = 1, scale: float = 100) -> str:
    """`29.0 [25.1, 33.2]`: a figure and its 95% interval, scaled (100: percent)."""
    return f"{mean * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def format_cell(cell: Cell, digits: int = 1, scale: float = 100) -> str:
    """A cell as `format_interval` writes it: its mean and its 95% interval."""
    return format_interval(cell.mean, cell.lo, cell.hi, digits, scale)


def format_paired(diff: Paired, digits: int = 1, scale: float = 100) -> str:
    """`+2.4 [-0.1, +5.0]`: A - B and its 95% interval, scaled, marked * where the interval excludes 0."""
    return (f"{diff.diff * scale:+.{digits}f} [{diff.lo * scale:+.{digits}f}, {diff.hi * scale:+.{digits}f}]"
            + ("*" if diff.significant else ""))


def display_format(metric: str) -> tuple[int, float]:
    """(digits, scale) a figure is printed with: rates in percent to one decimal, counts as they are."""
    return (2, 1.0) if metric in COUNTS else (1, 100.0)


def bootstrappable(keys: Sequence[str]) -> list[str]:
    """The metrics among `keys` that `per_problem` computes, so that they get intervals: pass@k,
    chain_valid@k, the shares of samples and the counts."""
    return [key for key in keys if key in SHARES or key in COUNTS
            or (key.partition("@")[0] in COUNTED and key.partition("@")[2].isdigit())]


# ------------------------------------------------------------------------------------ two configurations
def _evaluation(path: Path) -> Path:
    """An evaluation as `table` takes it: its folder or its metrics.json (`NAME.metrics.json` stands for
    the samples beside it), or a samples / verdicts file."""
    path = Path(path)
    if path.name == "metrics.json":
        return path.parent
    if path.name.endswith(".metrics.json"):
        stem = path.name[: -len(".metrics.json")]
        for suffix in _FILE_SUFFIXES:
            if path.with_name(stem + suffix).is_file():
                return path.with_name(stem + suffix)
        # a metrics.json alone holds no per-problem verdicts: nothing to pair or bootstrap
        raise BadInput(f"{path}: no checked samples beside it ({stem}.samples.jsonl[.gz]): a comparison "
                       "reads each sample's verdict")
    return path


def shared_metrics(results_dirs: Sequence[Path]) -> list[str]:
    """The metrics every evaluation's metrics.json reports and `per_problem` computes, in its order;
    pass@1 where an evaluation has no metrics.json (a `score` verdicts file)."""
    reported = [_read_json(_beside(Path(d), "metrics")) for d in results_dirs]
    if any(not metrics for metrics in reported):
        return ["pass@1"]
    return [key for key in bootstrappable(list(reported[0])) if all(key in metrics for metrics in reported[1:])]


def compare(a_dirs: Sequence[Path], b_dirs: Sequence[Path], metrics: Sequence[str] | None = None,
            n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Configuration A against configuration B, one evaluation folder per training seed on each side:
    for each metric, A's and B's figures with their intervals (`cell`) and A - B paired on the problems
    both were evaluated on (`paired`). What `ladir-bench compare` prints."""
    a_dirs, b_dirs = [_evaluation(d) for d in a_dirs], [_evaluation(d) for d in b_dirs]
    if not a_dirs or not b_dirs:
        raise BadInput("no results folders given")
    # each evaluation's samples read once, whatever the number of metrics
    read = {d: (problem_set(d), read_results(d)) for d in dict.fromkeys([*a_dirs, *b_dirs])}

    def units(dirs: list[Path], metric: str) -> list[_Unit]:
        return [_Unit(read[d][0], _scores(read[d][1], metric, d)) for d in dirs]

    rows = []
    for metric in metrics or shared_metrics([*a_dirs, *b_dirs]):
        a, b = units(a_dirs, metric), units(b_dirs, metric)
        rows.append({"metric": metric, "a": asdict(_cell_of(a, n_boot, seed)), "b": asdict(_cell_of(b, n_boot, seed)),
                     "a_minus_b": asdict(_paired_of(a, b, n_boot, seed))})
    if not rows:
        raise BadInput("the evaluations report no metric in common")
    return rows


# ------------------------------------------------------------------------------------ one evaluation
INTERVAL_BOOTSTRAP = 2000


def interval_record(results: Sequence[SampleResult], metrics: dict[str, Any],
                    n_boot: int = INTERVAL_BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """`{"intervals": {metric: [lo, hi]}, "stderr": {metric: se}}` for the rates in `metrics`
    (pass@k, chain_valid@k, uses_given_numbers) and counts (diversity) of one evaluation: a bootstrap
    over its problems, so a metrics.json alone carries its error bars."""
    by_problem = group_by_problem(results)
    rates = bootstrappable(list(metrics))
    intervals, stderr = {}, {}
    for key in rates:
        values = pd.Series(per_problem_scores(by_problem, key))
        found = _cell_of([_Unit(None, values)], n_boot, seed)
        intervals[key], stderr[key] = [found.lo, found.hi], found.stderr
    return {"intervals": intervals, "stderr": stderr} if rates else {}
