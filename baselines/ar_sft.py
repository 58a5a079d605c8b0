"""AR SFT: the backbone fine-tuned on question -> CoT -> answer, sampled left to right with temperature.

The reference every other method is compared against (the paper's "SFT" rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.lm import encode_pairs, next_token_loss, sample_completions
from harness.methods import Method, register_method
from harness.training import Trainer, checkpoints, load_modules
from tasks import Problem


@dataclass
class ArSftOptions:
    loss_on_prompt: bool = False  # SFT: the loss covers the completion only


@dataclass
class ArSampleKnobs:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 100


@register_method("ar-sft", "ar_sft")
class ArSft(Method):
    Options = ArSftOptions
    SampleKnobs = ArSampleKnobs
    phase_name = "sft"
    stages = ("sft",)

    def train(self, stage: str | None = None) -> Path:
        ctx = self.ctx
        model = ctx.base_model()
        phase = ctx.phase(self.phase_name)
        phase.tokens_per_step = lambda step: ctx.tokens_in(ctx.batch(self.phase_name, step))

        def loss_fn(step: int):
            problems = ctx.batch(self.phase_name, step)
            batch = encode_pairs(ctx.tokenizer, [p["prompt"] for p in problems], [p["reference"] for p in problems],
                                 ctx.config.model.max_length, self.options.loss_on_prompt, ctx.device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return next_token_loss(logits, batch["labels"]), {}

        final = Trainer(phase, model).fit(loss_fn)
        self.model = model.eval()
        return final

    def load(self) -> None:
        found = checkpoints(self.ctx.run_dir / self.phase_name)
        if not found:
            raise FileNotFoundError(f"no {self.phase_name} checkpoint in {self.ctx.run_dir}")
        model = self.ctx.fresh_backbone()
        load_modules(model, found[-1][1])
        self.model = model.to(self.ctx.device).eval()

    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        settings = self.sample_knobs(knobs)
        return [
            sample_completions(self.model, self.ctx.tokenizer, problem["prompt"], n, settings.temperature,
                               settings.top_p, settings.max_new_tokens, settings.batch_size)
            for problem in problems
        ]
