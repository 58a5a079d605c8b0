"""AR SFT: the backbone fine-tuned on question -> CoT -> answer, sampled left to right with temperature.

The reference every other method is compared against (the paper's "SFT" rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.lm import lm_loss
from harness.methods import AutoregressiveMethod
from harness.train.checkpoint import final_checkpoint, load_modules
from harness.train.lora import apply_lora
from harness.train.seeding import Shard
from harness.train.trainer import Trainer


@dataclass
class ArSftOptions:
    loss_on_prompt: bool = False  # SFT: the loss covers the completion only


@dataclass
class ArSampleKnobs:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 100


class ArSft(AutoregressiveMethod):
    Options = ArSftOptions
    SampleKnobs = ArSampleKnobs
    phase_name = "sft"
    stages = ("sft",)
    lm_folder = "model"  # where `save_modules` puts the LM in a checkpoint: "model", or the child's name in a wrapper

    def train(self, stage: str | None = None) -> Path:
        if done := self.finished(self.phase_name):
            return done
        ctx = self.ctx
        # with train.lora_r > 0 only adapters train; the checkpoint holds the merged model all the same
        model = apply_lora(ctx.backbone.base_model(), ctx.config.train.lora_r)

        def loss_fn(step: int, shard: Shard):
            return lm_loss(model, ctx.tokenizer, ctx.batch(self.phase_name, step, shard=shard), ctx.config.model.max_length,
                           self.options.loss_on_prompt, ctx.device), {}

        final = Trainer(ctx.phase(self.phase_name, count_tokens=True), model).fit(loss_fn)
        self.model = (model.merge_and_unload() if ctx.config.train.lora_r else model).eval()
        return final

    def load(self) -> None:
        self.model = load_final_model(self.ctx, self.phase_name)

    def hf_model_path(self) -> str:
        return str(final_checkpoint(self.ctx.run_dir / self.phase_name)[1] / self.lm_folder)


def load_final_model(ctx, phase_name: str):
    """The backbone with a phase's last checkpoint loaded, on the run's device, in eval mode."""
    model = ctx.backbone.fresh_model()
    load_modules(model, final_checkpoint(ctx.run_dir / phase_name)[1])
    return model.to(ctx.device).eval()
