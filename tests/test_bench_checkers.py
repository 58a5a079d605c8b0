"""Checker throughput (`harness.tools.bench_checkers`) and the fast paths behind it, each held to the
verdicts of the path it shortcuts: countdown's plain-arithmetic parser against `ast`, the math
checker's de-duplication, batching and parse cache against math-verify called afresh per pair, and
the code sandbox's launcher against a fresh interpreter per sample."""

from __future__ import annotations

import math
import operator
import os
import random
import signal
import time

import pytest

import tasks.math as math_tasks
from harness.tools.bench_checkers import (
    checker_figures,
    countdown_workload,
    math_workload,
)
from tasks import code, get_task
from tasks.countdown import _verdict_by_ast, _verdict_plain, check_countdown_answer
from tasks.math import TimeoutWorkerPool


def test_checker_figures_quick_run():
    figures = checker_figures(repeats=1, scale=0.05)
    assert set(figures) == {"countdown_checker_per_s", "math_checker_per_s", "code_checker_per_s"}
    assert all(math.isfinite(value) and value > 0 for value in figures.values()), figures


def test_workloads_are_realistic_mixes():
    _task, items = countdown_workload(scale=0.05, seed=1)
    verdicts = _task.check_many(items)
    reasons = {v.reason.split(" ")[0] for v in verdicts}
    assert any(v.passed for v in verdicts) and not all(v.passed for v in verdicts)
    assert {"uses", "evaluates", "unparseable", "no"} <= reasons
    _task, items = math_workload(scale=0.1, seed=1)
    assert len({completion for _, completion in items}) < len(items) / 2  # k samples repeat themselves
    assert countdown_workload(scale=0.02, seed=2)[1] != countdown_workload(scale=0.02, seed=3)[1]


# ---------------------------------------------------------------------------- countdown


NUMBERS, TARGET = [12, 45, 67, 3], 300


@pytest.mark.parametrize("expression", [
    "(45+67-12)*3", "3*(67+45-12)", "((45+67)-12)*3", "( 45 + 67 - 12 ) * 3", "45+67-12*3", "45-(67-12)*3",
    "12/(45-45)+67+3", "1/0*0", "12/3/4/1", "(1/3)*3", "45/2*2+67+12-3", "00+45+67+3", "05+45",
    "-12+45+67*3", "2**3", "12//3", "3(4)", "()", "(((45+67", "45 67 12 3", "1000001*1", "1000000*1",
    "99999*99999*99999*99999*99999*99999*99999", "1/999999/999999/999999/999999/999999/999999",
    "(" * 99 + "1" + ")" * 99, "12 + (45 * (67 - 3))", "12+45+", "+12", "12 3",
])
def test_plain_parser_gives_the_ast_verdict(expression):
    completion = f"Steps. The answer is {expression}."
    assert check_countdown_answer(NUMBERS, TARGET, completion) == _verdict_by_ast(NUMBERS, TARGET, expression)


def test_plain_parser_agrees_with_ast_on_random_expressions():
    rng = random.Random(0)

    def expression(depth: int) -> str:
        if depth == 0 or rng.random() < 0.3:
            return rng.choice(["0", "1", "3", "7", "12", "45", "99", "00", "07", "1000001", str(rng.randint(0, 10**6))])
        text = f"{expression(depth - 1)}{rng.choice('+-*/')}{expression(depth - 1)}"
        return f"({text})" if rng.random() < 0.4 else text

    noise = list("0123456789+-*/() ")
    fast = 0
    for index in range(4000):
        text = expression(rng.randint(1, 6))
        if index % 3 == 0:  # damaged: a character dropped, doubled or inserted
            position = rng.randrange(len(text) + 1)
            text = text[:position] + rng.choice(noise + [""]) + text[position + 1 - rng.randint(0, 1):]
        text = text.strip()
        if not text or len(text) > 200:
            continue
        numbers = rng.sample([0, 1, 3, 7, 12, 45, 99], rng.randint(1, 4))
        target = rng.choice([0, 1, 10, 21, 99])
        fast += _verdict_plain(numbers, target, text) is not None
        verdict = check_countdown_answer(numbers, target, f"The answer is {text}")
        assert verdict == _verdict_by_ast(numbers, target, text), text
    assert fast > 2000  # the comparison did exercise the fast path


# ---------------------------------------------------------------------------- math

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "\\dfrac{1}{2}"), ("\\frac{1}{2}", "\\frac12"),
    ("-\\frac{7}{2}", "-3.5"), ("5\\sqrt{3}", "\\sqrt{75}"), ("x^2+2x+1", "(x+1)^2"), ("[-2, 3)", "[-2,3)"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"), ("\\text{(C)}", "C"), ("59049", "3^{10}"),
    ("1200", "1200.0"), ("10\\%", "0.1"), ("3, 5, 7", "7, 5, 3"), ("\\text{Monday}", "Monday"),
    ("2\\pi", "\\pi \\cdot 2"),
]
NOT_EQUIVALENT = [
    ("\\frac{1}{2}", "\\frac{1}{3}"), ("\\frac{1}{2}", "0.25"), ("-\\frac{7}{2}", "3.5"), ("5\\sqrt{3}", "5\\sqrt{2}"),
    ("x^2+2x+1", "(x-1)^2"), ("[-2, 3)", "[-2, 3]"), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)"),
    ("\\text{(C)}", "(B)"), ("59049", "3^9"), ("1200", "1200.5"), ("3, 5, 7", "3, 5"), ("\\text{Monday}", "Tuesday"),
    ("\\frac{1}{2}", "banana"), ("2\\pi", "6.28"),
]


def _fresh_judgement(gold: str, predicted: str) -> tuple[bool, str]:
    """math-verify on this pair alone: nothing remembered from any other comparison."""
    math_tasks._parsed_answer.cache_clear()
    return math_tasks.judge_math_answer(gold, predicted)


def test_deduplicated_batched_cached_verdicts_equal_fresh_math_verify():
    task = get_task("math500")
    pairs = EQUIVALENT + NOT_EQUIVALENT
    assert [_fresh_judgement(*pair)[0] for pair in pairs] == [True] * len(EQUIVALENT) + [False] * len(NOT_EQUIVALENT)
    # k=100-like repetition, shuffled, in every answer style: each distinct pair is judged once.
    rng = random.Random(0)
    styles = ["The answer is {}.", "So $\\boxed{{{}}}$.", "The answer is ${}$."]
    items = [({"answer": gold}, rng.choice(styles).format(predicted)) for gold, predicted in pairs
             for _ in range(rng.randint(1, 6))]
    rng.shuffle(items)
    verdicts = task.check_many(items, workers=2)
    expected: dict[tuple[str, str], tuple[bool, str]] = {}
    for (problem, _completion), verdict in zip(items, verdicts):
        pair = (problem["answer"], verdict.answer)
        if pair not in expected:
            expected[pair] = _fresh_judgement(*pair)
        assert (verdict.passed, verdict.canonical) == expected[pair], (pair, verdict)


def test_parse_cache_returns_what_parsing_afresh_returns():
    for text in {text for pair in EQUIVALENT + NOT_EQUIVALENT for text in pair}:
        first, again = math_tasks._parsed_answer(text), math_tasks._parsed_answer(text)
        assert first is again  # the second came from the cache
        assert [str(x) for x in first] == [str(x) for x in math_tasks._parse_math(text)]


def test_batched_pool_times_each_call_on_its_own():
    pool = TimeoutWorkerPool(preload=())
    try:
        calls = [(operator.add, (1, 2)), (time.sleep, (60,)), (operator.mul, (3, 4)),
                 (operator.truediv, (1, 0)), (operator.sub, (9, 4))]
        started = time.monotonic()
        outcomes = pool.run(calls, timeout_s=1.0, max_workers=1, batch_size=5)
        assert time.monotonic() - started < 15
        assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "error", "ok"]
        assert [outcomes[i].value for i in (0, 2, 4)] == [3, 12, 5]
        # A worker dying mid-batch costs that call only; the rest of its batch is redone elsewhere.
        outcomes = pool.run([(abs, (-1,)), (os._exit, (3,)), (abs, (-2,)), (abs, (-3,))], timeout_s=5.0,
                            max_workers=2, batch_size=4)
        assert [o.status for o in outcomes] == ["ok", "error", "ok", "ok"]
        assert outcomes[1].value == "worker process died" and [outcomes[i].value for i in (0, 2, 3)] == [1, 2, 3]
    finally:
        pool.close()


def test_stuck_comparison_in_a_big_batch_times_out_alone(monkeypatch):
    from tests.test_math import STALL, _slow_judge

    task = get_task("math500", check_timeout=1.5)
    monkeypatch.setattr(math_tasks, "_judge_job", _slow_judge)
    half = {"answer": "\\frac{1}{2}"}
    # Sorted by answer (as the checker orders its calls), the stuck one sits between the others, so
    # calls queued behind it in its batch must be handed on.
    answers = [f"\\frac{{{n}}}{{{2 * n}}}" for n in range(1, 40)] + [STALL] + [f"{n}/3" for n in range(1, 40)]
    started = time.monotonic()
    verdicts = task.check_many([(half, f"The answer is {answer}") for answer in answers], workers=2)
    assert time.monotonic() - started < 60
    assert [v.passed for v in verdicts] == [True] * 39 + [False] + [False] * 39
    assert "timeout" in verdicts[39].reason


# ---------------------------------------------------------------------------- code


@pytest.fixture(scope="module")
def humaneval():
    return get_task("humaneval", timeout=2.0, memory_mb=1024, startup_slack=2.0)


# Fails if anything of an earlier sample's process survives into this one, then leaves such marks.
LEAK_PROBE = """\
import builtins, json, os, sys
assert not hasattr(builtins, "LEAKED") and not hasattr(json, "LEAKED") and "leaked_module" not in sys.modules
assert not hasattr(sys.modules["__main__"], "LEAKED")
assert os.getsid(0) == os.getpgid(0) == os.getppid()  # the monitor leads its own session
assert os.environ["HOME"] == os.environ["TMPDIR"] and os.environ["HOME"].endswith("work")
builtins.LEAKED = json.LEAKED = sys.modules["__main__"].LEAKED = True
sys.modules["leaked_module"] = json
"""


def test_launcher_gives_every_sample_a_fresh_process(humaneval):
    problem = humaneval.problems("test")[0]
    program = LEAK_PROBE + problem["prompt"] + problem["canonical_solution"]
    verdicts = humaneval.check_many([(problem, program)] * 6, workers=2)
    assert all(v.passed for v in verdicts), verdicts
    assert code._LAUNCHER is not None and code._LAUNCHER.alive()


def test_launcher_verdicts_equal_fresh_interpreter_verdicts(humaneval, monkeypatch):
    problems = humaneval.problems("test")[:6]
    items = [(p, p["canonical_solution"]) for p in problems] + [(p, "    return None\n") for p in problems]
    items += [(problems[0], "    while True:\n        pass\n"), (problems[0], "    x = bytearray(8 * 1024**3)\n"),
              (problems[0], "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")]
    by_launcher = humaneval.check_many(items, workers=2)
    monkeypatch.setattr(code, "_LAUNCHER_UNAVAILABLE", True)
    by_interpreter = humaneval.check_many(items, workers=2)
    assert by_launcher == by_interpreter
    assert [v.passed for v in by_launcher] == [True] * 6 + [False] * 9


def test_a_killed_launcher_is_replaced(humaneval):
    problem = humaneval.problems("test")[0]
    assert humaneval.check(problem, problem["canonical_solution"]).passed
    launcher = code._LAUNCHER
    os.kill(launcher.process.pid, signal.SIGKILL)
    launcher.process.wait()
    assert humaneval.check(problem, problem["canonical_solution"]).passed
    assert code._LAUNCHER is not launcher and code._LAUNCHER.alive()
