"""Pass@k and diversity, computed from per-sample verdicts grouped by problem."""

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


def default_ks(n_samples_per_problem: int) -> list[int]:
    """1, 10, 100 ... up to the number of samples each problem has."""
    ks, k = [], 1
    while k <= n_samples_per_problem:
        ks.append(k)
        k *= 10
    return ks


def summarize(results: Sequence[SampleResult], ks: Sequence[int] | None = None) -> dict:
    """The metrics object shared by `score --json`, `eval --json` and metrics.json.

    Pass@k is averaged over problems that have at least k samples; a k larger than every problem's
    sample count is left out rather than estimated from too few samples. When every result carries
    `base_passed` (HumanEval+ / MBPP+), `pass@k.base` (base inputs only) and `pass@k.plus` (base AND
    plus inputs, evalplus' "+" figure, equal to `pass@k`) are added.
    """
    by_problem: dict[str, list[SampleResult]] = defaultdict(list)
    for result in results:
        by_problem[result.task_id].append(result)
    counts = [len(samples) for samples in by_problem.values()]
    min_n = min(counts) if counts else 0
    ks = list(ks) if ks else default_ks(min_n)

    metrics: dict = {"n_problems": len(by_problem), "n_samples": len(results)}
    split = bool(results) and all(r.base_passed is not None for r in results)
    for k in ks:
        eligible = [samples for samples in by_problem.values() if len(samples) >= k]
        if not eligible:
            continue
        metrics[f"pass@{k}"] = float(
            np.mean([pass_at_k(len(s), sum(r.passed for r in s), k) for s in eligible])
        )
        if split:
            metrics[f"pass@{k}.base"] = float(
                np.mean([pass_at_k(len(s), sum(bool(r.base_passed) for r in s), k) for s in eligible])
            )
            metrics[f"pass@{k}.plus"] = metrics[f"pass@{k}"]
    metrics["diversity"] = float(
        np.mean([len({r.canonical for r in s if r.passed and r.canonical is not None}) for s in by_problem.values()])
    ) if by_problem else 0.0
    metrics["distinct-2"] = distinct_n(r.completion for r in results)
    metrics["unique_answers"] = float(
        np.mean([len({r.answer for r in s if r.answer is not None}) for s in by_problem.values()])
    ) if by_problem else 0.0
    return metrics
