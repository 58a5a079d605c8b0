"""Where a masked-diffusion model's Countdown samples fail, from an evaluation's samples.jsonl: the
copy (are the first step's operands numbers of the question?) and the arithmetic (is each step
`a op b = c` exact, whatever its operands?), the two conditions step validity joins.

    python results/mdm-countdown4/copy_and_arithmetic.py RUNS/RUN/results/countdown4-test/k10/samples.jsonl \
        > results/mdm-countdown4/RUN.k10[.LABEL].copy-arithmetic.json

Keys: `well_formed_steps` (share of the samples' sentences before the answer that parse as `a op b = c.`),
`first_operands_given` (samples whose first step parses and takes both operands from the question's
numbers, each at most as often as given), `step_arithmetic_exact` (of the parsed steps, those whose
c is exactly a op b), `answer_uses_given_numbers` (the checker's copy diagnostic: the answer uses
exactly the question's numbers).
"""

import json
import sys
from collections import Counter

from harness.jsonl import read_jsonl
from tasks import get_task
from tasks.countdown import _parse_step

path = sys.argv[1]
task = get_task("countdown4", seed=0)
problems = {p["task_id"]: p for p in task.problems("test")}
samples = sentences_seen = parsed = exact = operands_given = uses_given = 0
for row in read_jsonl(path):
    problem = problems[row["task_id"]]
    sentences, _ = task.split_target(row["completion"])
    steps = [_parse_step(s) for s in sentences]
    samples += 1
    sentences_seen += len(sentences)
    parsed += sum(step is not None for step in steps)
    exact += sum(step is not None and step[4] for step in steps)
    first = steps[0] if steps else None
    operands_given += first is not None and not Counter([first[0], first[2]]) - Counter(problem["numbers"])
    uses_given += bool(row.get("uses_given_numbers"))
print(json.dumps({"samples_file": path, "samples": samples,
                  "well_formed_steps": parsed / max(sentences_seen, 1),
                  "first_operands_given": operands_given / max(samples, 1),
                  "step_arithmetic_exact": exact / max(parsed, 1),
                  "answer_uses_given_numbers": uses_given / max(samples, 1)}, indent=2))
