"""How much probability the HF engine's `pretrained` model puts on the harness's reserved tokens, which
vLLM's copy of the model does not have (the harness adds them to every tokenizer and resizes the
embeddings; vLLM loads the folder as it is). Scored at every position of a run's sampled completions
(every 8th sample): if the mass is negligible, the two engines sample the same distribution.

    python results/vllm-cpu/reserved_mass.py RUN SAMPLES_JSONL > reserved_mass.json
"""

import json
import sys
from pathlib import Path

import torch

from harness.backbone import RESERVED_TOKENS
from harness.runs import open_run, runs_root


def main(run: str, samples: str) -> None:
    method, ctx = open_run(run, runs_root())
    tokenizer, model = ctx.tokenizer, method.model
    reserved = tokenizer.convert_tokens_to_ids(RESERVED_TOKENS)
    problems = {p["task_id"]: p for p in ctx.task.problems("test")}
    rows = [json.loads(line) for line in Path(samples).read_text().splitlines()][::8]
    masses = []
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer(method.prompt(problems[row["task_id"]]), add_special_tokens=False)["input_ids"]
            completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            ids = [tokenizer.bos_token_id] * method.add_bos + prompt + completion
            logits = model(torch.tensor([ids], device=ctx.device)).logits[0, -len(completion) - 1:-1].float()
            masses.append(logits.softmax(-1)[:, reserved].sum(-1))
    mass = torch.cat(masses)
    print(json.dumps({"run": run, "samples_scored": len(rows), "positions": mass.numel(),
                      "reserved_tokens": len(reserved), "mean_mass": mass.mean().item(),
                      "max_mass": mass.max().item()}, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
