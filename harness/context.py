"""The run context: what the protocol hands every method (config, device, task splits, the step's
batch, the shared backbone and tokenizer, phases under the run directory).

A method never builds its own data splits, tokenizer or backbone: it asks the context, so every
method starts from the same base checkpoint and sees the same problems in the same order.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from harness.backbone import SharedBackbone
from harness.config import RunConfig
from harness.errors import BadInput
from harness.train import distributed
from harness.train.seeding import Shard, batch_indices
from harness.train.trainer import Phase
from tasks import Problem, Task, get_task


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {requested!r} requested but CUDA is not available")
    return torch.device(requested)


class RunContext:
    def __init__(self, config: RunConfig, run_dir: Path, runs_root: Path):
        self.config = config
        self.run_dir = run_dir
        self.runs_root = runs_root
        self.seed = config.seed
        self.device = distributed.init(resolve_device(config.device))

    # -- data -----------------------------------------------------------------------------------
    @cached_property
    def task(self) -> Task:
        return get_task(self.config.task, seed=self.seed, **self.config.task_options)

    def train_problems(self) -> list[Problem]:
        problems = [p for p in self.task.problems("train") if p.get("reference")]
        if not problems:
            raise BadInput(f"task {self.task.name!r} has no training problems with reference solutions")
        return problems

    def batch(self, phase: str, step: int, batch_size: int | None = None, shard: Shard = Shard.WHOLE) -> list[Problem]:
        """The training problems of one step (or of the micro-batch `shard` the Trainer hands a loss call):
        a pure function of (seed, phase, step, shard)."""
        problems = self.train_problems()
        size = batch_size or self.config.train.batch_size
        return [problems[i] for i in batch_indices(self.seed, phase, step, len(problems), size, shard)]

    def tokens_in(self, problems: list[Problem]) -> int:
        """Tokens a batch trains on (character tokenizer: characters), for the train log's tokens/s."""
        return sum(len(self.task.training_text(p)) + 2 for p in problems) if self.config.model.from_scratch else 0

    # -- backbone -------------------------------------------------------------------------------
    @cached_property
    def backbone(self) -> SharedBackbone:
        return SharedBackbone(self.config, self.task, self.runs_root, self.device, self.train_problems, self.batch,
                              self.tokens_in)

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    # -- phases ---------------------------------------------------------------------------------
    def phase(self, name: str, steps: int | None = None, lr: float | None = None, schedule: str = "cosine",
              count_tokens: bool = False) -> Phase:
        """A phase under the run directory (the run's budget unless told); `count_tokens` logs tokens/s
        for phases whose step trains on `batch(name, step)`."""
        phase = Phase(name, self.run_dir / name, self.config.train.steps if steps is None else steps,
                      self.config.train.lr if lr is None else lr, self.seed, self.config.train, schedule=schedule,
                      tokenizer=self.tokenizer)
        if count_tokens:
            phase.tokens_per_step = lambda step: self.tokens_in(self.batch(name, step))
        return phase
