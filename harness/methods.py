"""The shared protocol: the `Method` interface, the method registry, and the `RunContext` that gives
every method the same splits, backbone, tokenizer, budget and run directory.

A method never builds its own data splits, tokenizer or backbone: it asks the context, so AR-SFT,
LaDiR and the baselines all start from the same base checkpoint and see the same problems. The
protocol, not the method, owns the run directory, checkpoints and logs (harness.training) and the
evaluation (harness.evaluation).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness.backbone import build_char_tokenizer, load_pretrained, tiny_llama
from harness.config import RunConfig, build_dataclass
from harness.errors import BadInput
from harness.lm import encode_pairs, next_token_loss
from harness.registry import Registry
from harness.training import Phase, Trainer, batch_indices, load_modules, phase_done
from tasks import Problem, Task, get_task

# ----------------------------------------------------------------------------------------- registry
def _load_builtin_methods() -> None:
    import baselines  # noqa: F401  (registers the baselines)
    import ladir  # noqa: F401  (registers LaDiR)


METHODS: Registry[type[Method]] = Registry("method", _load_builtin_methods)


def register_method(name: str, *aliases: str):
    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name, *aliases)(cls)

    return decorator


def method_names() -> list[str]:
    return METHODS.names()


def get_method_class(name: str) -> type[Method]:
    return METHODS.resolve(name)[1]


# ----------------------------------------------------------------------------------------- context
def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {requested!r} requested but CUDA is not available")
    return torch.device(requested)


class RunContext:
    """Everything a method may use: config, task splits, tokenizer, the shared base backbone, phases."""

    def __init__(self, config: RunConfig, run_dir: Path, runs_root: Path):
        self.config = config
        self.run_dir = run_dir
        self.runs_root = runs_root
        self.seed = config.seed
        self.device = resolve_device(config.device)

    # -- data -----------------------------------------------------------------------------------
    @cached_property
    def task(self) -> Task:
        return get_task(self.config.task, seed=self.seed, **self.config.task_options)

    def train_problems(self) -> list[Problem]:
        problems = [p for p in self.task.problems("train") if p.get("reference")]
        if not problems:
            raise BadInput(f"task {self.task.name!r} has no training problems with reference solutions")
        return problems

    def batch(self, phase: str, step: int, batch_size: int | None = None) -> list[Problem]:
        """The training problems of one step, a pure function of (seed, phase, step)."""
        problems = self.train_problems()
        size = batch_size or self.config.train.batch_size
        return [problems[i] for i in batch_indices(self.seed, phase, step, len(problems), size)]

    # -- backbone -------------------------------------------------------------------------------
    @cached_property
    def base_dir(self) -> Path:
        """Shared by every run of this task/backbone/seed: the base checkpoint and the tokenizer."""
        model = self.config.model
        if not model.from_scratch:
            return self.runs_root / "_base" / f"pretrained-{_slug(model.name)}"
        key = json.dumps(
            {"task": self.config.task, "task_options": self.config.task_options, "model": vars(model),
             "steps": self.config.train.base_steps, "lr": self.config.train.base_lr,
             "batch": self.config.train.batch_size, "seed": self.seed},
            sort_keys=True,
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        return self.runs_root / "_base" / f"{self.config.task}-seed{self.seed}-{digest}"

    @cached_property
    def tokenizer(self):
        path = self.base_dir / "tokenizer"
        from transformers import AutoTokenizer

        if path.is_dir():
            return AutoTokenizer.from_pretrained(path)
        if self.config.model.from_scratch:
            texts = [self.task.training_text(p) for p in self.train_problems()]
            for split in self.task.splits:
                if split != "train":
                    texts += [p["prompt"] for p in self.task.problems(split)]
            tokenizer = build_char_tokenizer(texts)
        else:
            _, tokenizer = load_pretrained(self.config.model.name, self.config.model.dtype)
        tokenizer.save_pretrained(path)
        return tokenizer

    def fresh_backbone(self):
        if self.config.model.from_scratch:
            return tiny_llama(self.config.model, len(self.tokenizer), self.tokenizer, self.seed)
        model, _ = load_pretrained(self.config.model.name, self.config.model.dtype)
        return model

    def base_model(self):
        """A fresh copy of the shared base checkpoint, training it first if this is the first run to need it.

        From scratch, the base is a language model of the task's training text (question, reasoning,
        answer), standing in for the pretrained LLM every method starts from in the paper.
        """
        model = self.fresh_backbone()
        if self.config.model.from_scratch and self.config.train.base_steps > 0:
            phase = Phase("base", self.base_dir / "base", self.config.train.base_steps, self.config.train.base_lr,
                          self.seed, self.config.train)
            if not phase_done(phase.directory):
                self._train_base(model, phase)
            else:
                from harness.training import checkpoints

                load_modules(model, checkpoints(phase.directory)[-1][1])
        return model.to(self.device)

    def _train_base(self, model, phase: Phase) -> None:
        model.to(self.device)
        max_length = self.config.model.max_length

        def loss_fn(step: int):
            problems = self.batch("base", step)
            batch = encode_pairs(self.tokenizer, [p["prompt"] for p in problems], [p["reference"] for p in problems],
                                 max_length, loss_on_prompt=True, device=self.device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return next_token_loss(logits, batch["labels"]), {}

        phase.tokens_per_step = lambda step: self.tokens_in(self.batch("base", step))
        Trainer(phase, model).fit(loss_fn)

    def tokens_in(self, problems: list[Problem]) -> int:
        return sum(len(self.task.training_text(p)) + 2 for p in problems) if self.config.model.from_scratch else 0

    def phase(self, name: str, steps: int | None = None, lr: float | None = None, schedule: str = "cosine") -> Phase:
        return Phase(name, self.run_dir / name, self.config.train.steps if steps is None else steps,
                     self.config.train.lr if lr is None else lr, self.seed, self.config.train, schedule=schedule)

    def method_options(self, options_cls: type) -> Any:
        return build_dataclass(options_cls, self.config.method_options, "method_options")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-80:]


# ----------------------------------------------------------------------------------------- protocol
@dataclass
class NoOptions:
    """For methods without knobs of their own."""


class Method(ABC):
    """A training method under the shared protocol.

    `Options` holds the method's training knobs (paper defaults), validated from `method_options`;
    `SampleKnobs` the knobs `sample` accepts (`ladir-bench eval --knob name=value`).
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    SampleKnobs: ClassVar[type] = NoOptions
    # Training phases in order; `ladir-bench train --stage S` runs the phases up to and including S.
    stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.options = ctx.method_options(self.Options)

    @abstractmethod
    def train(self, stage: str | None = None) -> Path:
        """Train (resuming from the last checkpoint) and return the final checkpoint directory.

        `stage` stops after that phase (e.g. LaDiR's "vae"); None runs every phase.
        """

    @abstractmethod
    def load(self) -> None:
        """Load the trained weights for sampling."""

    @abstractmethod
    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        """n completions per problem, full text: reasoning, then `The answer is ...`."""

    def sample_knobs(self, knobs: dict[str, Any]) -> Any:
        return build_dataclass(self.SampleKnobs, knobs, "knob")

