"""How often a method's own sampled reasoning steps are valid Countdown steps (operands from the
pool, arithmetic exact), from an evaluation's samples.jsonl: the scale against which LaDiR's
`block_valid` is read.

    python results/ladir-countdown4/step_validity.py runs/cd4-ar/results/countdown4-test/k100/samples.jsonl \
        > results/ladir-countdown4/ar-sft.k100.step-validity.json
"""

import json
import sys

from harness.jsonl import read_jsonl
from tasks import get_task

path = sys.argv[1]
task = get_task("countdown4", seed=0)
problems = {p["task_id"]: p for p in task.problems("test")}
steps = valid = first = first_valid = samples = 0
for row in read_jsonl(path):
    sentences, _ = task.split_target(row["completion"])
    verdicts = task.steps_valid(problems[row["task_id"]], sentences)
    samples += 1
    steps += len(verdicts)
    valid += sum(verdicts)
    if verdicts:
        first += 1
        first_valid += verdicts[0]
print(json.dumps({"samples_file": path, "samples": samples, "steps": steps, "step_valid": valid / max(1, steps),
                  "first_steps": first, "first_step_valid": first_valid / max(1, first)}, indent=2))
