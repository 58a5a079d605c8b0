"""What an MDM checkpoint predicts at target positions it can see: argmax accuracy at masked and at
visible (unmasked) target positions of the first 200 test rows, at mask rates 0.1 / 0.5 / 0.9. The
loss trains only masked positions; MGDM's decoder (easy_first) re-predicts the visible ones too.

    LADIR_RUNS=runs python results/mdm-countdown4/visible_positions.py RUN > results/mdm-countdown4/RUN.visible-positions.json
"""
import json
import os
import sys
from pathlib import Path

import torch
import yaml

from baselines.mdm import last_logits, target_rows
from harness.config import RunConfig, build_dataclass
from harness.context import RunContext
from harness.methods import get_method_class

root = Path(os.environ.get("LADIR_RUNS", "runs"))
run = sys.argv[1]
config = build_dataclass(RunConfig, yaml.safe_load((root / run / "config.yaml").read_text()), "")
ctx = RunContext(config, root / run, root)
method = get_method_class(config.method)(ctx)
method.load()
tokenizer, gen_length = ctx.tokenizer, method.options.gen_length
problems = ctx.task.problems("test")[:200]
clean, valid = target_rows(tokenizer, problems, gen_length)
torch.manual_seed(0)
report = {"run": run, "rows": len(problems), "rates": {}}
for rate in (0.1, 0.5, 0.9):
    masked = torch.zeros_like(valid)
    masked[:, -gen_length:] = torch.rand(len(problems), gen_length) < rate
    noisy = clean.masked_fill(masked, method.mask_id)
    with torch.no_grad():
        predicted = last_logits(method.model, noisy, valid, gen_length + 1)[:, :-1].argmax(-1)
    right, hidden = predicted == clean[:, -gen_length:], masked[:, -gen_length:]
    report["rates"][str(rate)] = {"masked_right": float(right[hidden].float().mean()),
                                  "visible_right": float(right[~hidden].float().mean())}
print(json.dumps(report, indent=2))
