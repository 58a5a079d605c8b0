"""How often a method's own reasoning steps are valid, from its checked samples (tasks with a step
checker: Countdown). The figures that decide whether a scale measures planning: a model whose steps
are not valid arithmetic has not learnt what the plan is made of.

Keys: `step_valid` (all steps: arithmetic exact and operands still in the pool, the checker's replay),
`first_step_valid` (each sample's first step); `passed` (the checker on the whole completion, Pass@1
over all samples); `chain_solves` (every step valid and they leave the target alone in the pool: the
steps themselves solve the problem); `answer_follows_chain` (of those, how many answers pass: 1.0 for
an answer that reads its steps); `passed_without_chain` (answers right although the steps do not
solve the problem). The arithmetic alone (`arithmetic_valid`: `a op b = c` true) is split into the
steps before the last (`arithmetic_valid_before_last`, the ones a model chooses freely) and the last
(`arithmetic_valid_last`, with `last_step_writes_target`: how often it ends in `= target` whether or
not that is true).
"""

from __future__ import annotations

from collections.abc import Iterable

from tasks import Problem, Task


def step_figures(task: Task, problems: dict[str, Problem], samples: Iterable[dict]) -> dict | None:
    """The figures above over `samples` (checked rows of an evaluation's samples.jsonl: task_id,
    completion, passed), `problems` by task_id; None for a task without a step checker."""
    steps = valid = arithmetic = first = first_valid = count = passed = solves = solves_passed = 0
    before_last = before_last_exact = last_exact = writes_target = 0
    for row in samples:
        problem = problems[row["task_id"]]
        sentences, _ = task.split_target(row["completion"])
        verdicts = task.steps_valid(problem, sentences)
        if verdicts is None:
            return None
        exact = task.steps_arithmetic(sentences)
        count += 1
        steps += len(verdicts)
        valid += sum(verdicts)
        arithmetic += sum(exact)
        if verdicts:
            first += 1
            first_valid += verdicts[0]
            before_last += len(exact) - 1
            before_last_exact += sum(exact[:-1])
            last_exact += exact[-1]
            writes_target += sentences[-1].rstrip(" .").endswith(f"={problem['target']}")
        right = bool(row["passed"])  # the checker's verdict, stored with the sample
        implied = task.answer_from_steps(problem, sentences)
        chain = implied is not None and task.check(problem, implied).passed
        passed += right
        solves += chain
        solves_passed += chain and right
    return {"samples": count, "steps": steps,
            "step_valid": valid / max(1, steps), "first_steps": first, "first_step_valid": first_valid / max(1, first),
            "passed": passed / max(1, count), "chain_solves": solves / max(1, count),
            "answer_follows_chain": solves_passed / max(1, solves),
            "passed_without_chain": (passed - solves_passed) / max(1, count),
            "steps_per_sample": steps / max(1, count), "arithmetic_valid": arithmetic / max(1, steps),
            "arithmetic_valid_before_last": before_last_exact / max(1, before_last),
            "arithmetic_valid_last": last_exact / max(1, first),
            "last_step_writes_target": writes_target / max(1, first)}
