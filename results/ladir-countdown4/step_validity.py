"""How often a method's own sampled reasoning steps are valid Countdown steps (operands from the
pool, arithmetic exact), and whether its answers follow the steps, from an evaluation's
samples.jsonl: the scale against which LaDiR's `block_valid` and `pass1_generated` are read. The
figures and their keys: `harness.evaluate.steps.step_figures` (an evaluation made since writes them
into its metrics.json as `step_figures`; this script recomputes them from the samples alone).

    python results/ladir-countdown4/step_validity.py runs/g4-vae2x/results/countdown4-test-stage2-step100/k100/samples.jsonl \
        > results/ladir-countdown4/g4-vae2x.k100.step-validity.json

The problems are the evaluation's own: its task, seed and task options are read from the
manifest.json beside the samples (Countdown-3, -4 or -5, any seed); an older evaluation without one
is read as Countdown-4 at seed 0, the only evaluations made before manifests existed. The file sits
beside the evaluation's metrics, with the same name (`RUN.k100[SUFFIX].step-validity.json`).
"""

import json
import sys
from pathlib import Path

from harness.evaluate.steps import step_figures
from harness.jsonl import read_jsonl
from tasks import get_task


def evaluated_task(samples_file: Path):
    manifest = samples_file.parent / "manifest.json"
    if not manifest.is_file():
        return get_task("countdown4", seed=0), "test"
    sitting = json.loads(manifest.read_text())
    config = sitting["config"]
    return get_task(sitting["task"], seed=config["seed"], **(config.get("task_options") or {})), sitting["split"]


if __name__ == "__main__":
    samples_file = Path(sys.argv[1])
    countdown, split = evaluated_task(samples_file)
    problems = {p["task_id"]: p for p in countdown.problems(split)}
    print(json.dumps({"samples_file": sys.argv[1], **step_figures(countdown, problems, read_jsonl(samples_file))},
                     indent=2))
