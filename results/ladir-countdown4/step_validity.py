"""How often a method's own sampled reasoning steps are valid Countdown steps (operands from the
pool, arithmetic exact), and whether its answers follow the steps, from an evaluation's
samples.jsonl: the scale against which LaDiR's `block_valid` and `pass1_generated` are read. The
figures and their keys: `harness.evaluate.steps.step_figures`.

    python results/ladir-countdown4/step_validity.py runs/g4-vae2x/results/countdown4-test-stage2-step100/k100/samples.jsonl \
        > results/ladir-countdown4/g4-vae2x.k100.step-validity.json

The file sits beside the evaluation's metrics, with the same name (`RUN.k100[SUFFIX].step-validity.json`).
"""

import json
import sys

from harness.evaluate.steps import step_figures
from harness.jsonl import read_jsonl
from tasks import get_task

if __name__ == "__main__":
    countdown = get_task("countdown4", seed=0)
    problems = {p["task_id"]: p for p in countdown.problems("test")}
    print(json.dumps({"samples_file": sys.argv[1], **step_figures(countdown, problems, read_jsonl(sys.argv[1]))},
                     indent=2))
