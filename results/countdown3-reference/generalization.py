"""Does a trained run fit its training problems better than problems it never saw? Each run's own
training loss, per reference token, on N training and N validation problems of its seed: AR-SFT's
next-token cross-entropy under teacher forcing; MDM's cross-entropy of the masked reference tokens at
fixed mask rates (the `</s>` padding after the first excluded: it is easy and would dilute the gap).
MDM's training loss falls to the end of its schedule while its validation Pass@1 is flat: this says
whether what it learns late is the training set (a gap) or nothing that transfers (no gap).

    python results/countdown3-reference/generalization.py RUNS RUN [RUN ...] [--problems 1000] \
        > results/countdown3-reference/generalization.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout

from baselines.mdm import last_logits, masked_cross_entropy, target_rows  # noqa: E402
from harness.evaluate.provenance import evaluated_checkpoint  # noqa: E402
from harness.jsonl import read_jsonl  # noqa: E402
from harness.lm import IGNORE, encode_pairs  # noqa: E402
from harness.runs import open_run  # noqa: E402

MASK_RATES = tuple((i + 0.5) / 20 for i in range(20))  # midpoints: their mean CE is the integral over t
BATCH = 100


def ar_loss(method, ctx, problems) -> dict:
    """Mean next-token CE per reference token (and its `</s>`), teacher-forced."""
    total, count = 0.0, 0
    for i in range(0, len(problems), BATCH):
        chunk = problems[i:i + BATCH]
        batch = encode_pairs(ctx.tokenizer, [p["prompt"] for p in chunk], [p["reference"] for p in chunk],
                             ctx.config.model.max_length)
        logits = method.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels,
                                               ignore_index=IGNORE, reduction="sum")
        total, count = total + float(ce), count + int((labels != IGNORE).sum())
    return {"teacher_forced": total / count}


def mdm_loss(method, ctx, problems, seed: int) -> dict:
    """Mean CE of the masked reference tokens (reference and its first `</s>`) at each fixed mask rate,
    and their mean over the rates (LLaDA's bound on the NLL per token, to set beside AR's
    teacher-forced CE); the same masks for every run (one generator per rate)."""
    tokenizer, gen_length = ctx.tokenizer, method.options.gen_length
    mask_id = method.mask_id
    out = {}
    for rate in MASK_RATES:
        generator = torch.Generator().manual_seed(seed)
        total, count = 0.0, 0
        for i in range(0, len(problems), BATCH):
            chunk = problems[i:i + BATCH]
            clean, valid = target_rows(tokenizer, chunk, gen_length)
            ends = (clean[:, -gen_length:] == tokenizer.eos_token_id).float().argmax(1)  # the first </s>, scored
            target_columns = torch.zeros_like(valid)
            target_columns[:, -gen_length:] = True
            # the padding is masked as in training (visible, it would give the answer's length away)
            masked = target_columns & (torch.rand(valid.shape, generator=generator) < rate)
            scored = masked.clone()
            scored[:, -gen_length:] &= torch.arange(gen_length)[None, :] <= ends[:, None]
            logits = last_logits(method.model, clean.masked_fill(masked, mask_id), valid, gen_length + 1)
            ce = masked_cross_entropy(logits, clean.masked_fill(~scored, IGNORE))
            total, count = total + float(ce.sum()), count + int(scored.sum())
        out[f"mask_rate_{rate}"] = total / count
    # LLaDA's bound on the NLL, per token: E_t[(1/t) sum over masked CE] = L * integral of CE(t) dt
    out["nll_bound"] = sum(out.values()) / len(MASK_RATES)
    return out


def logged_loss(ctx, phase: str, window: int = 400) -> dict:
    """The training loss the run logged, averaged over each `window` steps (its own objective, so only
    its trend compares across methods)."""
    rows = [row for row in read_jsonl(ctx.run_dir / phase / "log.jsonl") if "loss" in row]
    windows: dict[int, list[float]] = {}
    for row in rows:
        windows.setdefault(-(-row["step"] // window) * window, []).append(row["loss"])
    return {str(end): sum(losses) / len(losses) for end, losses in sorted(windows.items())}


@torch.no_grad()
def measure(root: Path, name: str, n: int) -> dict:
    method, ctx = open_run(name, root)
    method.model.eval()
    splits = {"train": ctx.train_problems()[:n], "val": ctx.task.problems("val")[:n]}
    loss = {split: ar_loss(method, ctx, problems) if ctx.config.method == "ar-sft"
            else mdm_loss(method, ctx, problems, ctx.seed) for split, problems in splits.items()}
    gap = {key: loss["val"][key] - loss["train"][key] for key in loss["train"]}
    return {"run": name, "method": ctx.config.method, "problems": {s: len(p) for s, p in splits.items()},
            "checkpoint": evaluated_checkpoint(method, ctx),
            "loss": loss, "val_minus_train": gap, "logged_training_loss": logged_loss(ctx, method.stages[-1])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--problems", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps([measure(args.runs_dir, name, args.problems) for name in args.runs], indent=2))
