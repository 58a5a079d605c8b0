"""Any pretrained causal LM as a method: zero- or few-shot, no training (`--method pretrained
--model HUB_ID|DIR|FILE.gguf|smollm2-135m`).

The prompt is built as lm-evaluation-harness builds a few-shot prompt: the first `shots` training
problems with their reference completions, then the question; through the tokenizer's chat
template when it has one (a user turn per question, an assistant turn per reference), plain text
otherwise. Generation stops at the model's end-of-turn token, and the completion is cut after the
line holding the first `The answer is` (the stop sequence): a base model that goes on writing the
next made-up example must not have that example's answer scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baselines.ar_sft import ArSampleKnobs
from harness.errors import BadInput
from harness.methods import AutoregressiveMethod
from tasks import ANSWER_MARKER, Problem


@dataclass
class PretrainedOptions:
    shots: int = 3  # worked examples (training problems with references) before the question
    chat_template: str = "auto"  # "auto": the tokenizer's template if it has one; "none": plain text

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise BadInput(f"method_options.shots must be >= 0, got {self.shots}")
        if self.chat_template not in ("auto", "none"):
            raise BadInput(f"method_options.chat_template must be auto or none, got {self.chat_template!r}")


def cut_at_answer(completion: str) -> str:
    """The completion up to the end of the line that holds its first `The answer is`."""
    start = completion.lower().find(ANSWER_MARKER.lower())
    if start < 0:
        return completion.strip()
    end = completion.find("\n", start)
    return (completion if end < 0 else completion[:end]).strip()


class Pretrained(AutoregressiveMethod):
    Options = PretrainedOptions
    SampleKnobs = ArSampleKnobs
    stages = ()

    def __init__(self, ctx):
        super().__init__(ctx)
        if ctx.config.model.from_scratch:
            raise BadInput("method 'pretrained' needs --model HUB_ID, a model directory or a .gguf file")

    def train(self, stage: str | None = None) -> Path:
        """Nothing to train: check that the model loads, so a bad --model fails here, not at eval."""
        self.check_stage(stage)
        self.load()
        return self.ctx.run_dir

    def load(self) -> None:
        self.model = self.ctx.backbone.fresh_model().to(self.ctx.device).eval()

    def load_untrained(self) -> None:
        self.load()  # the pretrained weights are the method's only weights

    def hf_model_path(self) -> str:
        return self.ctx.config.model.name

    @property
    def uses_chat_template(self) -> bool:
        return self.options.chat_template == "auto" and bool(getattr(self.ctx.tokenizer, "chat_template", None))

    def prompt(self, problem: Problem) -> str:
        examples = [p for p in self.ctx.task.problems("train") if p.get("reference")][: self.options.shots]
        if self.uses_chat_template:
            messages = []
            for example in examples:
                messages += [{"role": "user", "content": example["prompt"]},
                             {"role": "assistant", "content": example["reference"]}]
            messages.append({"role": "user", "content": problem["prompt"]})
            return self.ctx.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        shots = "".join(f"{example['prompt']}{example['reference']}\n\n" for example in examples)
        return shots + problem["prompt"]

    @property
    def add_bos(self) -> bool:
        return not self.uses_chat_template

    def finish(self, completion: str) -> str:
        return cut_at_answer(completion)
