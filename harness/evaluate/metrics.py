"""Pass@k and diversity, computed from per-sample verdicts grouped by problem; on Countdown also
chain_valid@k (the same estimator on MGDM's criterion: every step valid and the last reaching the
target) and the share of answers that use exactly the given numbers (the copy diagnostic)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al., 2021), in its stable product form."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Distinct-n: unique n-grams over all n-grams, over whitespace tokens of all texts together."""
    total, unique = 0, set()
    for text in texts:
        tokens = text.split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


@dataclass(frozen=True)
class SampleResult:
    task_id: str
    completion: str
    passed: bool
    canonical: str | None
    answer: str | None
    base_passed: bool | None = None  # HumanEval+ / MBPP+: passed the base inputs (`passed` = base AND plus)
    chain_valid: bool | None = None  # Countdown: MGDM's criterion (tasks.base.Verdict)
    uses_given_numbers: bool | None = None  # Countdown: the answer uses exactly the question's numbers

    @classmethod
    def from_record(cls, record: dict) -> SampleResult:
        """From a checked sample (a samples.jsonl row of `eval`, a verdicts row of `score`)."""
        def optional(field: str) -> bool | None:
            return None if record.get(field) is None else bool(record[field])

        return cls(str(record["task_id"]), record["completion"], bool(record["passed"]), record.get("canonical"),
                   record.get("answer"), optional("base_passed"), optional("chain_valid"),
                   optional("uses_given_numbers"))


# The per-sample verdict each rate is the share of: `pass@k` counts `passed`, `chain_valid@k` counts
# `chain_valid`; `uses_given_numbers` is a plain share of samples (no k).
COUNTED = {"pass": "passed", "chain_valid": "chain_valid"}
SHARES = ("uses_given_numbers",)
# Counts per problem, averaged over problems: `diversity` is the number of distinct correct solutions
# (canonical forms) among a problem's samples, the paper's diversity column.
COUNTS = ("diversity",)


def default_ks(n_samples_per_problem: int) -> list[int]:
    """1, 10, 100 ... up to the number of samples each problem has."""
    ks, k = [], 1
    while k <= n_samples_per_problem:
        ks.append(k)
        k *= 10
    return ks


def group_by_problem(results: Iterable[SampleResult]) -> dict[str, list[SampleResult]]:
    by_problem: dict[str, list[SampleResult]] = defaultdict(list)
    for result in results:
        by_problem[result.task_id].append(result)
    return dict(by_problem)


def carries(results: Sequence[SampleResult], field: str) -> bool:
    """Every result holds this verdict (a task that computes it), so a rate of it means something."""
    return bool(results) and all(getattr(r, field) is not None for r in results)


def per_problem_scores(by_problem: dict[str, list[SampleResult]], metric: str) -> dict[str, float]:
    """task_id -> the metric on that problem alone: the unbiased `pass@k` / `chain_valid@k` from its n
    samples and c successes (problems with fewer than k samples left out), or a share of its samples
    (`uses_given_numbers`), or a count (`diversity`). Their mean over problems is the metric `summarize`
    reports."""
    if metric == "diversity":
        return {tid: float(len({r.canonical for r in s if r.passed and r.canonical is not None}))
                for tid, s in by_problem.items()}
    if metric in SHARES:
        return {tid: float(np.mean([bool(getattr(r, metric)) for r in s])) for tid, s in by_problem.items()}
    name, _, k_text = metric.partition("@")
    if name not in COUNTED or not k_text.isdigit() or int(k_text) < 1:
        known = ", ".join([*(f"{n}@k" for n in COUNTED), *SHARES, *COUNTS])
        raise ValueError(f"unknown metric {metric!r} (known: {known})")
    field, k = COUNTED[name], int(k_text)
    return {tid: pass_at_k(len(s), sum(bool(getattr(r, field)) for r in s), k)
            for tid, s in by_problem.items() if len(s) >= k}


def summarize(results: Sequence[SampleResult], ks: Sequence[int] | None = None) -> dict:
    """The metrics object shared by `score --json`, `eval --json` and metrics.json.

    Pass@k is averaged over problems that have at least k samples; a k larger than every problem's
    sample count is left out rather than estimated from too few samples. When every result carries
    `base_passed` (HumanEval+ / MBPP+), `pass@k.base` (base inputs only) and `pass@k.plus` (base AND
    plus inputs, evalplus' "+" figure, equal to `pass@k`) are added. When every result carries
    `chain_valid` / `uses_given_numbers` (Countdown), `chain_valid@k` and `uses_given_numbers` are too.
    """
    by_problem = group_by_problem(results)
    counts = [len(samples) for samples in by_problem.values()]
    min_n = min(counts) if counts else 0
    ks = list(ks) if ks else default_ks(min_n)

    metrics: dict = {"n_problems": len(by_problem), "n_samples": len(results)}
    split = carries(results, "base_passed")
    ks = [k for k in ks if any(len(samples) >= k for samples in by_problem.values())]
    for k in ks:
        metrics[f"pass@{k}"] = float(np.mean(list(per_problem_scores(by_problem, f"pass@{k}").values())))
        if split:
            eligible = [samples for samples in by_problem.values() if len(samples) >= k]
            metrics[f"pass@{k}.base"] = float(
                np.mean([pass_at_k(len(s), sum(bool(r.base_passed) for r in s), k) for s in eligible])
            )
            metrics[f"pass@{k}.plus"] = metrics[f"pass@{k}"]
    for name, field in COUNTED.items():
        if field != "passed" and carries(results, field):
            for k in ks:
                metrics[f"{name}@{k}"] = float(np.mean(list(per_problem_scores(by_problem, f"{name}@{k}").values())))
    for share in SHARES:
        if carries(results, share):
            metrics[share] = float(np.mean([bool(getattr(r, share)) for r in results]))
    metrics["diversity"] = float(np.mean(list(per_problem_scores(by_problem, "diversity").values()))) \
        if by_problem else 0.0
    metrics["distinct-2"] = distinct_n(r.completion for r in results)
    metrics["unique_answers"] = float(
        np.mean([len({r.answer for r in s if r.answer is not None}) for s in by_problem.values()])
    ) if by_problem else 0.0
    return metrics
