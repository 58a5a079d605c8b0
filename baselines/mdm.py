"""Masked discrete diffusion (MDM): the backbone fine-tuned to unmask the completion, sampled by confidence.

MGDM (Ye et al. 2025, "Beyond autoregression: discrete diffusion for complex reasoning and planning")
and LLaDA (Nie et al. 2025) at the SFT stage. A row is

    <s> question | target_1 .. target_L        target = reference </s> </s> ... (L = gen_length)

The question is never masked; each target token is replaced by `<MASK>` with probability t, and the
model predicts every masked token from everything else at once. Padding the target with `</s>` and
training on it (LLaDA) lets the model choose the answer's length: it predicts where the text ends.

The backbone is the shared AR checkpoint adapted to diffusion as DiffuLLaMA and Dream adapt AR
models: attention is made fully bidirectional over question and target by a 4-D additive mask
(blocked only for padding keys, which replaces the causal mask), and the "shift" convention is
kept, so the logits at position i-1 predict the token at position i, the alignment the AR head was
trained with. The question is never masked, so the position before a target token always exists.

Training (LLaDA's SFT loss; MGDM's objective without its difficulty-based token reweighting):

    t ~ U(eps, 1),  loss = 1 / (B L) * sum_rows sum_{masked i} CE(x_i | x_t) / t

Sampling (LLaDA's low-confidence remasking): every target token starts masked; at each of
`steps` steps the model draws a token for every masked position in one forward pass and only the
most confident ones are kept, so that the masked count falls linearly to 0 at the last step; the
others are masked again. `block_length` > 0 runs LLaDA's semi-autoregressive variant: the target is
unmasked block by block, left to right, with the steps split between blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from baselines.ar_sft import load_final_model
from harness.backbone import MASK
from harness.errors import BadInput
from harness.lm import IGNORE, pad_ids
from harness.methods import Method
from harness.progress import console
from harness.sampling import RowNoise, Trajectory, draw_tokens
from harness.train import distributed
from harness.train.seeding import Shard
from harness.train.trainer import Trainer
from tasks import Problem

if TYPE_CHECKING:
    from harness.context import RunContext


@dataclass
class MdmOptions:
    # Target tokens per row (reference + </s> padding). Countdown-4's longest reference is 66
    # characters, so 96 leaves room with the tiny preset's character tokenizer; longer ones are cut.
    gen_length: int = 96
    min_mask_rate: float = 1e-3  # eps: t ~ U(eps, 1), keeps the 1/t weight bounded

    def __post_init__(self) -> None:
        if self.gen_length < 1:
            raise BadInput(f"method_options.gen_length must be >= 1, got {self.gen_length}")
        if not 0 < self.min_mask_rate < 1:
            raise BadInput(f"method_options.min_mask_rate must be in (0, 1), got {self.min_mask_rate}")


@dataclass
class MdmSampleKnobs:
    steps: int = 32  # unmasking steps over the whole target (split between blocks)
    temperature: float = 1.0  # Gumbel-max sampling of each masked token; 0 = argmax
    block_length: int = 0  # semi-autoregressive blocks of this many target tokens; 0 = one block
    batch_size: int = 100  # rows per forward pass

    def __post_init__(self) -> None:
        if self.steps < 1 or self.temperature < 0 or self.block_length < 0 or self.batch_size < 1:
            raise BadInput("bad MDM knob: need steps >= 1, temperature >= 0, block_length >= 0, batch_size >= 1")


# ------------------------------------------------------------------------------------------ sequences
def prompt_ids(tokenizer, prompt: str) -> list[int]:
    return [tokenizer.bos_token_id, *tokenizer.encode(prompt, add_special_tokens=False)]


def encode_targets(tokenizer, references: Sequence[str], gen_length: int) -> tuple[torch.Tensor, int]:
    """(len(references), gen_length) targets `reference </s> </s> ...` and how many lost tokens to the cut."""
    eos = tokenizer.eos_token_id
    rows, truncated = [], 0
    for ids in tokenizer(list(references), add_special_tokens=False)["input_ids"]:
        ids = [*ids, eos]
        truncated += len(ids) > gen_length
        rows.append(ids[:gen_length] + [eos] * (gen_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long).view(len(rows), gen_length), truncated


def join_rows(tokenizer, prompts: Sequence[list[int]], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> prompt target` rows, prompts left-padded so every target fills the last columns; (ids, valid)."""
    ids, valid = pad_ids(prompts, tokenizer.pad_token_id, left=True, device=targets.device)
    return torch.cat([ids, targets], 1), torch.cat([valid, torch.ones_like(targets, dtype=torch.bool)], 1)


def bidirectional_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, S, S) mask: every query attends to every non-padding key, before or after it."""
    blocked = ~valid[:, None, None, :].expand(-1, 1, valid.size(1), -1)
    return torch.zeros(blocked.shape, dtype=dtype, device=valid.device).masked_fill(blocked, torch.finfo(dtype).min)


def last_logits(model, input_ids: torch.Tensor, valid: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits (B, keep, V) of the last `keep` positions under bidirectional attention.

    Explicit position ids count valid tokens only, so left padding never moves the rotary positions.
    """
    positions = (valid.long().cumsum(1) - 1).clamp_min(0)
    out = model(input_ids=input_ids, attention_mask=bidirectional_mask(valid, model.dtype), position_ids=positions,
                logits_to_keep=keep)
    return out.logits


# ------------------------------------------------------------------------------------------ training
def diffusion_loss(logits: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, target_length: int) -> torch.Tensor:
    """LLaDA's SFT loss: CE of every masked target token weighted 1/t, over the rows' target positions.

    `logits` (B, K, V) are those of the last K positions of the rows, `labels` (B, S) the clean token
    at masked target positions and IGNORE elsewhere (question, unmasked targets); position i-1
    predicts token i. Dividing by the count of all target positions, not of masked ones, keeps the
    loss an unbiased estimate of the per-token bound on the completion's negative log-likelihood.
    """
    predicted = labels[:, labels.size(1) - logits.size(1) + 1:]
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), predicted, ignore_index=IGNORE, reduction="none")
    return (ce / t[:, None]).sum() / (labels.size(0) * target_length)


def training_loss(model, tokenizer, problems: Sequence[Problem], gen_length: int, min_mask_rate: float,
                  device: torch.device | str) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss: mask each row's target at its own rate t ~ U(eps, 1) and predict the masked tokens."""
    targets, _ = encode_targets(tokenizer, [p["reference"] for p in problems], gen_length)
    clean, valid = join_rows(tokenizer, [prompt_ids(tokenizer, p["prompt"]) for p in problems], targets)
    clean, valid = clean.to(device), valid.to(device)
    rows = clean.size(0)
    t = min_mask_rate + (1 - min_mask_rate) * torch.rand(rows, device=device)
    masked = torch.zeros_like(valid)
    masked[:, -gen_length:] = torch.rand(rows, gen_length, device=device) < t[:, None]
    noisy = clean.masked_fill(masked, tokenizer.convert_tokens_to_ids(MASK))
    logits = last_logits(model, noisy, valid, gen_length + 1)
    loss = diffusion_loss(logits, clean.masked_fill(~masked, IGNORE), t, gen_length)
    return loss, {"mask_rate": float(masked[:, -gen_length:].float().mean())}


# ------------------------------------------------------------------------------------------ sampling
def unmasking_schedule(length: int, steps: int) -> list[int]:
    """Tokens committed at each step so that the masked count falls linearly from `length` to 0."""
    remaining = [length * (steps - step) // steps for step in range(steps + 1)]
    return [before - after for before, after in zip(remaining, remaining[1:])]


def block_plan(gen_length: int, block_length: int, steps: int) -> list[tuple[int, int, int]]:
    """(start, end, steps) per semi-autoregressive block; the steps split as evenly as they go."""
    width = block_length or gen_length
    starts = range(0, gen_length, width)
    if steps < len(starts):
        raise BadInput(f"steps={steps} is fewer than the {len(starts)} blocks of block_length={block_length}")
    return [(start, min(start + width, gen_length), steps // len(starts) + (b < steps % len(starts)))
            for b, start in enumerate(starts)]


@torch.no_grad()
def unmasking_steps(model, prompts: Sequence[list[int]], gen_length: int, mask_id: int, steps: int,
                    temperature: float = 1.0, block_length: int = 0,
                    noise: RowNoise | None = None) -> Iterator[torch.Tensor]:
    """LLaDA's low-confidence remasking for one row per prompt; yields the targets after each step.

    The confidence of a drawn token is the model's probability of it (untempered, as LLaDA). Every
    row starts fully masked and commits the same count each step, so the rows stay in lock step.
    Row i draws its tokens with `noise`'s stream i: one uniform per (step, position), whatever the
    batch. The yielded tensors are copies: keep any of them to trace the unmasking.
    """
    device = next(model.parameters()).device
    rows = len(prompts)
    target = torch.full((rows, gen_length), mask_id, dtype=torch.long, device=device)
    question, question_valid = pad_ids(prompts, mask_id, left=True, device=device)  # padding is never attended to
    valid = torch.cat([question_valid, torch.ones_like(target, dtype=torch.bool)], 1)
    uniforms = noise.uniform(steps, gen_length).to(device) if temperature > 0 else None  # (B, steps, G)
    step = 0
    for start, end, block_steps in block_plan(gen_length, block_length, steps):
        for commit in unmasking_schedule(end - start, block_steps):
            if commit:  # more steps than tokens leaves some steps with nothing to commit: skip their forward
                candidates = target == mask_id
                candidates[:, :start] = candidates[:, end:] = False
                logits = last_logits(model, torch.cat([question, target], 1), valid, gen_length + 1)[:, :-1]
                logits = logits[candidates]
                logits[:, mask_id] = float("-inf")  # never a training target; drawing it would leave a hole
                drawn = draw_tokens(logits, temperature, None if uniforms is None else uniforms[:, step][candidates])
                confidence = torch.full(target.shape, float("-inf"), device=device)
                confidence[candidates] = logits.float().softmax(-1).gather(1, drawn[:, None]).squeeze(1)
                proposal = target.clone()
                proposal[candidates] = drawn
                keep = confidence.topk(commit, dim=1).indices
                target.scatter_(1, keep, proposal.gather(1, keep))
            step += 1
            yield target.clone()


def decode_target(tokenizer, target: torch.Tensor) -> str:
    """The text up to the first `</s>` (the rest is the length padding the model learned)."""
    ids = target.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


# ------------------------------------------------------------------------------------------ the method
class MaskedDiffusion(Method):
    Options = MdmOptions
    SampleKnobs = MdmSampleKnobs
    phase_name = "mdm"
    stages = ("mdm",)

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        if self.options.gen_length >= ctx.config.model.max_length:
            raise BadInput(f"method_options.gen_length={self.options.gen_length} leaves no room for the question "
                           f"within model.max_length={ctx.config.model.max_length}")

    @property
    def mask_id(self) -> int:
        return self.ctx.tokenizer.convert_tokens_to_ids(MASK)

    def train(self, stage: str | None = None) -> Path:
        if done := self.finished(self.phase_name):
            return done
        ctx, options = self.ctx, self.options
        self._report_targets()
        model = ctx.backbone.base_model()

        def loss_fn(step: int, shard: Shard):
            return training_loss(model, ctx.tokenizer, ctx.batch(self.phase_name, step, shard=shard), options.gen_length,
                                 options.min_mask_rate, ctx.device)

        final = Trainer(ctx.phase(self.phase_name, count_tokens=True), model).fit(loss_fn)
        self.model = model.eval()
        return final

    def _report_targets(self) -> None:
        """How many training references do not fit gen_length with their `</s>` (they are cut), in mdm/targets.json."""
        problems = self.ctx.train_problems()
        gen_length = self.options.gen_length
        _, truncated = encode_targets(self.ctx.tokenizer, [p["reference"] for p in problems], gen_length)
        if not distributed.is_main_process():  # every process counted the same; one writes and warns
            return
        directory = self.ctx.run_dir / self.phase_name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "targets.json").write_text(json.dumps({"gen_length": gen_length, "problems": len(problems),
                                                            "truncated": truncated}) + "\n")
        if truncated:
            console.print(f"[yellow]warning:[/] {truncated} of {len(problems)} training references do not fit "
                          f"gen_length={gen_length} with their </s> and are truncated")

    def load(self) -> None:
        self.model = load_final_model(self.ctx, self.phase_name)

    def sample_knobs(self, knobs: dict) -> MdmSampleKnobs:
        settings = super().sample_knobs(knobs)
        block_plan(self.options.gen_length, settings.block_length, settings.steps)  # fail before any sampling
        return settings

    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        settings = self.sample_knobs(knobs)
        tokenizer = self.ctx.tokenizer
        prompts = [prompt_ids(tokenizer, problem["prompt"]) for problem in problems]

        def run_batch(rows: list[Trajectory]) -> list[str]:
            *_, targets = unmasking_steps(self.model, [prompts[r.problem] for r in rows], self.options.gen_length,
                                          self.mask_id, settings.steps, settings.temperature, settings.block_length,
                                          RowNoise.of(rows))
            return [decode_target(tokenizer, row) for row in targets]

        return self.sample_batched(problems, n, settings.batch_size, run_batch)
