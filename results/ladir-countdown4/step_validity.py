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

from harness.jsonl import read_jsonl
from tasks import get_task

path = sys.argv[1]
task = get_task("countdown4", seed=0)
problems = {p["task_id"]: p for p in task.problems("test")}
steps = valid = first = first_valid = samples = passed = solves = solves_passed = 0
for row in read_jsonl(path):
    problem = problems[row["task_id"]]
    sentences, _ = task.split_target(row["completion"])
    verdicts = task.steps_valid(problem, sentences)
    samples += 1
    steps += len(verdicts)
    valid += sum(verdicts)
    if verdicts:
        first += 1
        first_valid += verdicts[0]
    right = task.check(problem, row["completion"]).passed
    implied = task.answer_from_steps(problem, sentences)
    chain = implied is not None and task.check(problem, implied).passed
    passed += right
    solves += chain
    solves_passed += chain and right
print(json.dumps({"samples_file": path, "samples": samples, "steps": steps, "step_valid": valid / max(1, steps),
                  "first_steps": first, "first_step_valid": first_valid / max(1, first),
                  "passed": passed / max(1, samples), "chain_solves": solves / max(1, samples),
                  "answer_follows_chain": solves_passed / max(1, solves),
                  "passed_without_chain": (passed - solves_passed) / max(1, samples)}, indent=2))
