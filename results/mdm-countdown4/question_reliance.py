"""Does the MDM model read the question? Teacher-forced on validation references: the cross-entropy
and argmax accuracy of masked target tokens, with each row's own question and with another problem's
(rows shifted by one), at several mask rates (the same masks for both).

    python results/mdm-countdown4/question_reliance.py RUN > results/mdm-countdown4/RUN.question-reliance.json
"""

import json
import os
import sys
from pathlib import Path

import torch

from baselines.mdm import encode_targets, join_rows, last_logits, masked_cross_entropy, prompt_ids
from harness.backbone import MASK
from harness.lm import IGNORE
from harness.runs import open_run
from harness.train.checkpoint import final_checkpoint

run = sys.argv[1]
method, ctx = open_run(run, Path(os.environ.get("LADIR_RUNS", "runs")))
tok, length = ctx.tokenizer, method.options.gen_length
problems = ctx.task.problems("val")[:100]
targets, _ = encode_targets(tok, [p["reference"] for p in problems], length)
rows = {}
for name, questions in (("own question", problems), ("another problem's question", problems[1:] + problems[:1])):
    clean, valid = join_rows(tok, [prompt_ids(tok, p["prompt"]) for p in questions], targets)
    for rate in (0.15, 0.5, 1.0):
        masked = torch.zeros_like(valid)
        masked[:, -length:] = torch.rand(len(problems), length, generator=torch.Generator().manual_seed(1)) < rate
        with torch.no_grad():
            logits = last_logits(method.model, clean.masked_fill(masked, tok.convert_tokens_to_ids(MASK)), valid,
                                 length + 1)
        labels = clean.masked_fill(~masked, IGNORE)
        counted = labels[:, -length:] != IGNORE
        right = (logits[:, :-1].argmax(-1) == labels[:, -length:]) & counted
        rows.setdefault(name, {})[f"mask rate {rate}"] = {
            "cross_entropy": float(masked_cross_entropy(logits, labels).sum() / counted.sum()),
            "argmax_accuracy": float(right.sum() / counted.sum())}
step, _ = final_checkpoint(ctx.run_dir / method.phase_name)
print(json.dumps({"run": run, "checkpoint": {"phase": method.phase_name, "step": step},
                  "problems": f"{ctx.task.name} val, first {len(problems)}", **rows}, indent=2))
