"""Why does Fast-dLLM's confidence threshold help MDM here? Where each decoder spends its unmasking
steps: per sample, the forward passes it takes, how many of them commit a character of the text (up
to and with its first `</s>`) and how many only the `</s>` padding after it, and how many characters
of the text, and of its digits, one pass commits.

LLaDA's decoder commits gen_length / steps tokens a step (3 of 96 at 32 steps) whatever they are, so
the padding, about half of the 96 positions, takes its share of the steps. The threshold also commits
every token the model gives at least 0.9, and the padding is such a token: committed in bulk, it puts
the masked count below the linear schedule, after which a step commits the confident tokens or one.
This measures that on the run's own validation problems, with the sampler's own noise (`eval`'s draws).
`masked_per_pass` is how many of the target's positions are still masked when a pass starts (for a
decoder in one block, the block's): what a pass must predict, against the block's width that every pass
now reads (a cache of the committed columns, as dKV-Cache keeps, would leave only these, and the columns
that predict them, to run).

    python results/countdown3-reference/commit_order.py RUNS RUN [--problems 50] [--k 10] \
        [--setting LABEL=KNOB=VALUE,KNOB=VALUE ...] > results/countdown3-reference/commit-order.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout

from baselines.mdm import decode_target, prompt_ids  # noqa: E402
from harness.config import parse_override  # noqa: E402
from harness.evaluate.provenance import evaluated_checkpoint  # noqa: E402
from harness.runs import open_run  # noqa: E402
from harness.sampling import RowNoise, trajectories  # noqa: E402

SETTINGS = {"LLaDA's, 32 steps": {"steps": 32}, "threshold 0.9, 32 steps": {"steps": 32, "threshold": 0.9},
            "LLaDA's, 96 steps": {"steps": 96}}


@torch.no_grad()
def commit_order(method, ctx, problems, k: int, knobs: dict) -> dict:
    settings = method.sample_knobs(knobs)
    tokenizer, eos = ctx.tokenizer, ctx.tokenizer.eos_token_id
    rows = trajectories(problems, k, method.eval_seed)  # the draws `eval` makes
    prompts = [prompt_ids(tokenizer, problems[r.problem]["prompt"]) for r in rows]
    states = list(method.unmasking(prompts, RowNoise.of(rows), settings))  # as `eval` decodes, every step kept
    masked = torch.stack([state == method.mask_id for state in states])  # (steps, rows, positions)
    # the step each position was committed at: the first step after which it is no longer masked
    committed_at = (~masked).int().argmax(0)
    final = states[-1]
    figures: dict[str, list[float]] = {name: [] for name in (
        "forward_passes", "passes_writing_text", "passes_on_padding_only", "text_characters_per_step",
        "digits_per_step", "masked_per_pass")}
    # masked positions of each row's block when step s starts (every position before the first step)
    masked_before = torch.cat([masked.new_ones(1, *masked.shape[1:]), masked[:-1]]).sum(-1)  # (steps, rows), one block
    passed = 0

    def mean(values):
        return sum(values) / len(values)

    for row, (trajectory, target) in enumerate(zip(rows, final, strict=True)):
        ids = target.tolist()
        end = ids.index(eos) if eos in ids else len(ids) - 1  # the text and its first </s>
        text_steps = set(committed_at[row, : end + 1].tolist())
        all_steps = set(committed_at[row].tolist())  # a step that commits nothing runs no pass
        text = decode_target(tokenizer, target)
        digit_positions = [i for i, token in enumerate(ids[:end]) if tokenizer.decode([token]).isdigit()]
        digit_steps = {int(committed_at[row, i]) for i in digit_positions}
        figures["forward_passes"].append(len(all_steps))
        figures["passes_writing_text"].append(len(text_steps))
        figures["passes_on_padding_only"].append(len(all_steps - text_steps))
        figures["masked_per_pass"].append(mean([int(masked_before[step, row]) for step in all_steps]))
        figures["text_characters_per_step"].append((end + 1) / len(text_steps))
        if digit_positions:
            figures["digits_per_step"].append(len(digit_positions) / len(digit_steps))
        passed += ctx.task.check(problems[trajectory.problem], text).passed

    return {"knobs": {name: getattr(settings, name) for name in ("steps", "threshold", "gen_length")},
            "samples": len(rows), "pass@1": passed / len(rows),
            **{name: mean(values) for name, values in figures.items()}}


def measure(root: Path, name: str, n: int, k: int, settings: dict[str, dict] = SETTINGS) -> dict:
    method, ctx = open_run(name, root)
    method.model.eval()
    problems = ctx.task.problems("val")[:n]
    return {"run": name, "problems": len(problems), "k": k, "checkpoint": evaluated_checkpoint(method, ctx),
            "decoders": {label: commit_order(method, ctx, problems, k, knobs) for label, knobs in settings.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--setting", action="append", default=[],
                        help="LABEL=KNOB=VALUE,KNOB=VALUE: a decoder to measure instead of the three above")
    args = parser.parse_args()
    settings = SETTINGS
    if args.setting:
        settings = {}
        for text in args.setting:
            label, _, knobs = text.partition("=")
            settings[label] = {key: value for item in knobs.split(",") for key, value in parse_override(item).items()}
    print(json.dumps([measure(args.runs_dir, name, args.problems, args.k, settings) for name in args.runs], indent=2))
