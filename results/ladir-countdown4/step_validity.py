"""How often a method's own sampled reasoning steps are valid Countdown steps (operands from the
pool, arithmetic exact), and whether its answers follow the steps, from an evaluation's
samples.jsonl: the scale against which LaDiR's `block_valid` and `pass1_generated` are read.

    python results/ladir-countdown4/step_validity.py runs/g4-vae2x/results/countdown4-test-stage2-step100/k100/samples.jsonl \
        > results/ladir-countdown4/g4-vae2x.k100.step-validity.json

The file sits beside the evaluation's metrics, with the same name (`RUN.k100[SUFFIX].step-validity.json`).

Keys: `step_valid` (all steps), `first_step_valid` (each sample's first step); `passed` (the
checker on the whole completion, i.e. Pass@1 over all samples); `chain_solves` (every step valid
and they leave the target alone in the pool: the steps themselves solve the problem);
`answer_follows_chain` (of those, how many answers pass: 1.0 for an answer that reads its steps);
`passed_without_chain` (answers right although the steps do not solve the problem).
"""

import json
import sys
from pathlib import Path

from harness.jsonl import read_jsonl
from tasks import get_task


def step_validity(task, problems: dict, samples_path: Path | str) -> dict:
    """The figures above for one samples.jsonl (`problems`: task_id -> problem). Also the arithmetic
    alone (`arithmetic_valid`: `a op b = c` true), split into the steps before the last and the last,
    with how often the last ends in `= target` whether or not that is true."""
    steps = valid = arithmetic = first = first_valid = samples = passed = solves = solves_passed = 0
    before_last = before_last_exact = last_exact = writes_target = 0
    for row in read_jsonl(samples_path):
        problem = problems[row["task_id"]]
        sentences, _ = task.split_target(row["completion"])
        verdicts = task.steps_valid(problem, sentences)
        exact = task.steps_arithmetic(sentences)
        samples += 1
        steps += len(verdicts)
        valid += sum(verdicts)
        arithmetic += sum(exact)
        if verdicts:
            first += 1
            first_valid += verdicts[0]
            # the steps a model chooses freely, and the last one, which ends the chain at the target
            before_last += len(exact) - 1
            before_last_exact += sum(exact[:-1])
            last_exact += exact[-1]
            writes_target += sentences[-1].rstrip(" .").endswith(f"={problem['target']}")
        right = task.check(problem, row["completion"]).passed
        implied = task.answer_from_steps(problem, sentences)
        chain = implied is not None and task.check(problem, implied).passed
        passed += right
        solves += chain
        solves_passed += chain and right
    return {"samples_file": str(samples_path), "samples": samples, "steps": steps,
            "step_valid": valid / max(1, steps), "first_steps": first, "first_step_valid": first_valid / max(1, first),
            "passed": passed / max(1, samples), "chain_solves": solves / max(1, samples),
            "answer_follows_chain": solves_passed / max(1, solves),
            "passed_without_chain": (passed - solves_passed) / max(1, samples),
            "steps_per_sample": steps / max(1, samples), "arithmetic_valid": arithmetic / max(1, steps),
            "arithmetic_valid_before_last": before_last_exact / max(1, before_last),
            "arithmetic_valid_last": last_exact / max(1, first), "last_step_writes_target": writes_target / max(1, first)}


if __name__ == "__main__":
    countdown = get_task("countdown4", seed=0)
    print(json.dumps(step_validity(countdown, {p["task_id"]: p for p in countdown.problems("test")}, sys.argv[1]),
                     indent=2))
