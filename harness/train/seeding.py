"""Randomness as a function of (seed, phase, step): what makes a killed and resumed run replay exactly
the steps an uninterrupted one takes, on one process or many.

The Trainer reseeds torch with `micro_seed` before each micro-batch's loss, and every method draws a
step's examples through `RunContext.batch`, i.e. `batch_indices`, from a generator seeded the same
way. A step's global batch is split into `Shard`s, one per micro-batch (processes x accumulation
slots); the Trainer hands each loss call its shard explicitly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TypeVar

import torch

from harness.errors import BadInput

T = TypeVar("T")


def step_seed(seed: int, phase: str, step: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(phase.encode()) * 7_919 + step) % (2**63 - 1)


def seed_initialisation(seed: int, phase: str) -> None:
    """Seed torch's global generator before a phase builds what it adds to the base model (a VAE's
    latent queries and projections, a reasoner's, MTP's heads), so their initial weights are a function
    of (seed, phase) like every later draw. torch seeds that generator from the OS at start-up, so
    without this two processes with the same seed start such a phase from different weights, and a run
    resumed at a phase boundary from others than an uninterrupted one."""
    torch.manual_seed(step_seed(seed, phase + "/init", 0))


def micro_seed(seed: int, phase: str, step: int, micro: int, micro_batches: int) -> int:
    """The torch seed of micro-batch `micro` of a step: its noise (flow matching, dropout) is the same
    whichever process and accumulation slot runs it. One micro-batch keeps the step's seed, so
    single-process runs (and their cached checkpoints) are what they were before micro-batches."""
    if micro_batches == 1:
        return step_seed(seed, phase, step)
    return step_seed(seed, f"{phase}/micro{micro}", step)



@dataclass(frozen=True)
class Shard:
    """Micro-batch `index` of `count` in one optimizer step. `Shard.WHOLE` is the whole batch."""

    index: int = 0
    count: int = 1

    def take(self, items: list[T]) -> list[T]:
        """This micro-batch's share of a step's examples: every `count`-th one, so shards differ in size
        by at most one and together are the batch."""
        if self.count == 1:
            return items
        if len(items) < self.count:
            raise BadInput(f"a batch of {len(items)} examples cannot feed {self.count} micro-batches "
                           "(processes x train.grad_accum_steps); use a larger batch")
        return items[self.index::self.count]


Shard.WHOLE = Shard()


def batch_indices(seed: int, phase: str, step: int, population: int, batch_size: int,
                  shard: Shard = Shard.WHOLE) -> list[int]:
    """The examples of one step (or of one shard of it): a pure function of its arguments."""
    generator = torch.Generator().manual_seed(step_seed(seed, phase + "/data", step))
    return shard.take(torch.randint(population, (batch_size,), generator=generator).tolist())
