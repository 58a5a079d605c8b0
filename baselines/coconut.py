"""Coconut: chain of continuous thought (Hao et al. 2024, "Training Large Language Models to Reason in
a Continuous Latent Space").

The model reasons in its own hidden space: after `<BOT>`, the last hidden state at each position is
fed back as the next input embedding (a "continuous thought") instead of being decoded to a token,
and after `<EOT>` it writes text again (§3, Fig. 1). A multi-stage curriculum (§3, "Training
procedure") moves the reasoning into the latent space one step at a time. At stage s the sequence is

    <s> question <BOT> [s*c thoughts] <EOT> reasoning sentences s+1.. + answer sentence </s>

the first s reasoning sentences replaced by s*c thoughts (c = `thoughts_per_step`); the last stage
(`max_stage`) removes every reasoning sentence. Loss: next-token CE on the text after `<EOT>` only,
with gradients through the whole chain of thoughts. Each stage is its own phase (`stage0` ..
`stageK`), starting from the previous stage's final weights with a fresh optimizer, as the paper
resets the optimizer at each stage switch. The stages share the run's budget (`train.steps`) as
`stage_budget` says (`stage_budgets`): evenly, or as the official schedule splits its epochs (the CoT
stage and each partly latent stage 3 of 25 epochs, the all-latent stage the remaining 16).

Sampling runs the last stage's fixed number of thoughts, then `<EOT>`, then samples the answer text.

Beyond the paper, for the usual Coconut troubles (silent failed reproductions, unstable stages,
runaway latent norms): after every stage, greedy accuracy on held-out problems at that stage's
format goes to `curriculum.json` in the run directory; every training step logs the mean L2 norm of
the thoughts and its ratio to the mean norm of the token embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from baselines.ar_sft import load_final_model
from harness.backbone import BOT, EOT
from harness.errors import BadInput
from harness.jsonl import write_json_atomic
from harness.lm import IGNORE, CachedSequence, next_token_loss, pad_ids, write_tokens
from harness.methods import Method
from harness.progress import console
from harness.sampling import RowNoise, Trajectory
from harness.train import distributed
from harness.train.checkpoint import final_checkpoint, phase_done
from harness.train.seeding import Shard
from harness.train.trainer import Trainer
from tasks import Problem


@dataclass
class CoconutOptions:
    # c, thoughts per removed reasoning step. The paper uses 2 on GSM8k and 1 on ProntoQA/ProsQA; 1
    # here: a Countdown step is one short equation, and every thought is one more sequential forward
    # pass per training step, which a tiny model trained on a CPU pays for in full.
    thoughts_per_step: int = 1
    max_stage: int = 3  # K: Countdown-4 references have 3 reasoning sentences, all latent at the last stage
    val_problems: int = 100  # first val problems scored greedily after each stage (curriculum.json); 0 = none
    # How train.steps is split over the stages: "reference", the official schedule (args/gsm_coconut.yaml:
    # 25 epochs, stage = epoch // 3, the last stage holding the rest), or "even". Reference by measurement:
    # paired over 200 Countdown-4 problems, Pass@1 +2.4 [1.7, 3.0] and Pass@10 +5.4 [3.7, 7.2] (baselines/README.md)
    stage_budget: str = "reference"
    epochs_per_stage: int = 3  # "reference": each stage before the last
    num_epochs: int = 25  # "reference": the whole schedule, the CoT stage's epochs included

    def __post_init__(self) -> None:
        if self.thoughts_per_step < 1 or self.max_stage < 0 or self.val_problems < 0:
            raise BadInput("bad method_options value: need thoughts_per_step >= 1, max_stage >= 0, val_problems >= 0")
        if self.stage_budget not in ("even", "reference"):
            raise BadInput("bad method_options value: stage_budget must be even or reference")
        reference = self.stage_budget == "reference"
        if reference and (self.epochs_per_stage < 1 or self.num_epochs <= self.epochs_per_stage * self.max_stage):
            raise BadInput("bad method_options value: stage_budget reference needs epochs_per_stage >= 1 and "
                           "num_epochs > epochs_per_stage * max_stage (the last stage needs epochs of its own)")


@dataclass
class CoconutSampleKnobs:
    temperature: float = 1.0  # answer text after <EOT>; 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 100

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise BadInput("bad Coconut knob: need temperature >= 0, top_p in (0, 1], max_new_tokens >= 1, "
                           "batch_size >= 1")


# ------------------------------------------------------------------------------------------ data
def stage_layout(sentences: list[str], answer: str, stage: int, max_stage: int,
                 thoughts_per_step: int) -> tuple[int, str]:
    """(number of thoughts, text after <EOT>) of one reference at curriculum stage `stage`.

    Stage s replaces the first s reasoning sentences by s*c thoughts; the last stage replaces all of
    them (the paper's final stage keeps only the answer in language).
    """
    removed = len(sentences) if stage >= max_stage else min(stage, len(sentences))
    return stage * thoughts_per_step, " ".join([*sentences[removed:], answer])


@dataclass
class ThoughtBatch:
    """`<s> prompt <BOT>` left-padded (so every row's thoughts share columns), `<EOT> text </s>` right-padded."""

    prefix_ids: torch.Tensor  # (B, P)
    prefix_mask: torch.Tensor  # (B, P), False on left padding
    suffix_ids: torch.Tensor  # (B, S)
    suffix_mask: torch.Tensor  # (B, S), 0 on right padding
    labels: torch.Tensor  # (B, S): the text and </s>; IGNORE on <EOT> and padding
    thoughts: int


def encode_prefixes(tokenizer, prompts: list[str],
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> prompt <BOT>` rows, left-padded so that every row's thoughts fall in the same columns: (ids, mask)."""
    rows = [[tokenizer.bos_token_id, *tokenizer.encode(p, add_special_tokens=False),
             tokenizer.convert_tokens_to_ids(BOT)] for p in prompts]
    return pad_ids(rows, tokenizer.pad_token_id, left=True, device=device)


def encode_thought_batch(tokenizer, prompts: list[str], texts: list[str], thoughts: int, max_length: int,
                         device: torch.device | str = "cpu") -> ThoughtBatch:
    """Rows `<s> prompt <BOT> [thoughts] <EOT> text </s>`, the text cut to fit `max_length` in all."""
    prefix_ids, prefix_mask = encode_prefixes(tokenizer, prompts, device)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    suffixes = [[eot, *tokenizer.encode(t, add_special_tokens=False), tokenizer.eos_token_id] for t in texts]
    room = (max_length - thoughts - prefix_mask.sum(-1)).tolist()
    suffixes = [s[: max(1, r)] for s, r in zip(suffixes, room, strict=True)]
    width = max(map(len, suffixes))
    suffix_ids = torch.full((len(suffixes), width), tokenizer.pad_token_id, dtype=torch.long)
    suffix_mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    labels = torch.full((len(suffixes), width), IGNORE, dtype=torch.long)
    for i, suffix in enumerate(suffixes):
        suffix_ids[i, : len(suffix)] = torch.tensor(suffix)
        suffix_mask[i, : len(suffix)] = 1
        labels[i, 1 : len(suffix)] = torch.tensor(suffix[1:])  # not <EOT>
    return ThoughtBatch(prefix_ids, prefix_mask, suffix_ids.to(device), suffix_mask.to(device), labels.to(device),
                        thoughts)


# ------------------------------------------------------------------------------------------ the chain
class ThoughtChain(CachedSequence):
    """A batch grown through the KV cache (`harness.lm.CachedSequence`) that keeps the post-norm last
    hidden state of its last column: the next continuous thought."""

    last_hidden: torch.Tensor | None = None  # (B, 1, d)

    def append(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, all_logits: bool = True, hidden_states: bool = True):
        out = super().append(input_ids, inputs_embeds, mask, all_logits, hidden_states=True)
        # HF Llama's last hidden state is taken after the final norm, as the paper feeds back
        self.last_hidden = out.hidden_states[-1][:, -1:]
        return out

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)
        self.last_hidden = self.last_hidden[rows]

    def think(self, count: int) -> torch.Tensor:
        """`count` continuous thoughts (B, count, d): each the last hidden state fed back as the next input."""
        thoughts = []
        for _ in range(count):
            thoughts.append(self.last_hidden)
            self.append(inputs_embeds=self.last_hidden, all_logits=False)
        return torch.cat(thoughts, dim=1) if thoughts else self.last_hidden[:, :0]


def start_thoughts(model, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor,
                   count: int) -> tuple[ThoughtChain, torch.Tensor]:
    """One forward over the (left-padded) `<s> prompt <BOT>`, then `count` thoughts: the chain and the thoughts."""
    chain = ThoughtChain(model, len(prefix_ids), prefix_ids.device)
    chain.append(inputs_embeds=model.get_input_embeddings()(prefix_ids), mask=prefix_mask, all_logits=False)
    return chain, chain.think(count)


def coconut_loss(model, batch: ThoughtBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """CE on the text after `<EOT>`, backpropagated through every thought; thought norms for the log."""
    embed = model.get_input_embeddings()
    chain = ThoughtChain(model, len(batch.prefix_ids), batch.prefix_ids.device)
    prefix = embed(batch.prefix_ids)
    chain.append(inputs_embeds=prefix, mask=batch.prefix_mask, all_logits=False)
    thoughts = chain.think(batch.thoughts)
    suffix = embed(batch.suffix_ids)
    loss = next_token_loss(chain.append(inputs_embeds=suffix, mask=batch.suffix_mask).logits, batch.labels)
    if not batch.thoughts:
        return loss, {}
    with torch.no_grad():
        tokens = torch.cat([prefix[batch.prefix_mask.bool()], suffix[batch.suffix_mask.bool()]])
        thought_norm = thoughts.norm(dim=-1).mean()
        ratio = thought_norm / tokens.norm(dim=-1).mean()
    return loss, {"thought_norm": float(thought_norm), "thought_norm_ratio": float(ratio)}


@torch.no_grad()
def decode_after_thoughts(chain: ThoughtChain, tokenizer, max_new_tokens: int, temperature: float, top_p: float,
                          noise: RowNoise | None = None) -> list[str]:
    """Feed `<EOT>`, then write each row's text token by token until `</s>` (row i drawing with `noise`'s stream i)."""
    eot = torch.full((len(chain), 1), tokenizer.convert_tokens_to_ids(EOT), dtype=torch.long, device=chain.mask.device)
    logits = chain.append(input_ids=eot, all_logits=False).logits[:, -1]
    written = write_tokens(chain, logits, noise, temperature, top_p, max_new_tokens, [tokenizer.eos_token_id])
    return [tokenizer.decode(row, skip_special_tokens=True) for row in written]


# ------------------------------------------------------------------------------------------ the method
def stage_name(stage: int) -> str:
    return f"stage{stage}"


def stage_budgets(total: int, max_stage: int, split: str, epochs_per_stage: int = 3, num_epochs: int = 25) -> list[int]:
    """Optimizer steps of stages 0..max_stage, summing to `total`.

    "even": total / (max_stage + 1) each, the remainder to the last stages. "reference": the official
    schedule read in steps, one epoch = total / num_epochs: stage s = epoch // epochs_per_stage, capped
    at the last stage, so stage s < max_stage gets epochs [s e, (s + 1) e) and the last stage the rest
    (25 epochs, 3 per stage, max_stage 3: 3 / 3 / 3 / 16 epochs; 600 steps: 72 / 72 / 72 / 384).
    """
    count = max_stage + 1
    if split == "even":
        base, extra = divmod(total, count)
        return [base + (stage >= count - extra) for stage in range(count)]
    starts = [total * stage * epochs_per_stage // num_epochs for stage in range(count)]  # first step of each stage
    return [end - start for start, end in zip(starts, [*starts[1:], total], strict=True)]


class Coconut(Method):
    Options = CoconutOptions
    SampleKnobs = CoconutSampleKnobs
    stages = tuple(stage_name(s) for s in range(CoconutOptions.max_stage + 1))

    def __init__(self, ctx):
        super().__init__(ctx)
        # the CLI checks `--stage` against `stages`, which follow the run's max_stage
        self.stages = tuple(stage_name(s) for s in range(self.options.max_stage + 1))

    # ------------------------------------------------------------------------------- training
    def stage_steps(self, stage: int) -> int:
        o = self.options
        return stage_budgets(self.ctx.config.train.steps, o.max_stage, o.stage_budget, o.epochs_per_stage,
                             o.num_epochs)[stage]

    def stage_batch(self, problems: list[Problem], stage: int) -> ThoughtBatch:
        o, ctx = self.options, self.ctx
        layouts = [stage_layout(*ctx.task.split_target(p["reference"]), stage, o.max_stage, o.thoughts_per_step)
                   for p in problems]
        return encode_thought_batch(ctx.tokenizer, [p["prompt"] for p in problems], [text for _, text in layouts],
                                    stage * o.thoughts_per_step, ctx.config.model.max_length, ctx.device)

    def train(self, stage: str | None = None) -> Path:
        self.check_stage(stage)
        last = self.stages.index(stage) if stage is not None else self.options.max_stage
        final = None
        for s in range(last + 1):
            final = self.train_stage(s)
        return final

    def train_stage(self, stage: int) -> Path:
        """One curriculum stage from the previous stage's final weights (stage 0: the base checkpoint)."""
        ctx, name = self.ctx, stage_name(stage)
        phase = ctx.phase(name, steps=self.stage_steps(stage), count_tokens=True)
        if phase_done(phase.directory) and stage in self._validated():
            return final_checkpoint(phase.directory)[1]
        model = ctx.backbone.base_model() if stage == 0 else load_final_model(ctx, stage_name(stage - 1))

        def loss_fn(step: int, shard: Shard):
            return coconut_loss(model, self.stage_batch(ctx.batch(name, step, shard=shard), stage))

        final = Trainer(phase, model).fit(loss_fn)
        self.model = model.eval()
        self.record_validation(stage)
        return final

    # ------------------------------------------------------------------------------- per-stage accuracy
    @property
    def curriculum_path(self) -> Path:
        return self.ctx.run_dir / "curriculum.json"

    def _curriculum(self) -> list[dict]:
        return json.loads(self.curriculum_path.read_text()) if self.curriculum_path.is_file() else []

    def _validated(self) -> set[int]:
        return {record["stage"] for record in self._curriculum()}

    def record_validation(self, stage: int) -> None:
        """Greedy accuracy of `self.model` on the first val problems in stage `stage`'s format, once per stage."""
        if stage in self._validated():
            return
        problems = self.ctx.task.problems("val")[: self.options.val_problems]
        thoughts = stage * self.options.thoughts_per_step
        completions = self.complete(problems, thoughts)
        correct = sum(self.ctx.task.check(p, c).passed for p, c in zip(problems, completions, strict=True))
        accuracy = correct / len(problems) if problems else None
        record = {"stage": stage, "thoughts": thoughts, "val_accuracy": accuracy, "val_problems": len(problems)}
        records = sorted([*self._curriculum(), record], key=lambda r: r["stage"])
        if not distributed.is_main_process():  # every process measured the same; one writes and reports
            return
        write_json_atomic(self.curriculum_path, records)
        shown = "n/a" if accuracy is None else f"{accuracy:.3f} ({correct}/{len(problems)})"
        console.print(f"[coconut] {stage_name(stage)}: {thoughts} thoughts, greedy val accuracy {shown}")

    @torch.no_grad()
    def complete(self, problems: list[Problem], thoughts: int) -> list[str]:
        """Greedy text after `thoughts` thoughts and `<EOT>`, eval.batch_size problems at a time."""
        tok, size = self.ctx.tokenizer, self.ctx.config.eval.batch_size
        completions: list[str] = []
        for start in range(0, len(problems), size):
            group = problems[start : start + size]
            prefix_ids, prefix_mask = encode_prefixes(tok, [p["prompt"] for p in group], self.ctx.device)
            chain, _ = start_thoughts(self.model, prefix_ids, prefix_mask, thoughts)
            completions += decode_after_thoughts(chain, tok, self.ctx.config.eval.max_new_tokens, 0.0, 1.0)
        return completions

    # ------------------------------------------------------------------------------- sampling
    def load(self) -> None:
        self.model = load_final_model(self.ctx, stage_name(self.options.max_stage))

    @torch.no_grad()
    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        settings = self.sample_knobs(knobs)
        tok, thoughts = self.ctx.tokenizer, self.options.max_stage * self.options.thoughts_per_step

        def run_batch(rows: list[Trajectory]) -> list[str]:
            # the thoughts are deterministic: computed once per problem of the batch, shared by its samples
            present = list(dict.fromkeys(r.problem for r in rows))
            chain, _ = start_thoughts(self.model, *encode_prefixes(tok, [problems[p]["prompt"] for p in present],
                                                                   self.ctx.device), thoughts)
            chain.select(torch.tensor([present.index(r.problem) for r in rows], device=self.ctx.device))
            return decode_after_thoughts(chain, tok, settings.max_new_tokens, settings.temperature, settings.top_p,
                                         RowNoise.of(rows))

        return self.sample_batched(problems, n, settings.batch_size, run_batch)
