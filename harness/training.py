"""The training loop every method's phases run through: optimizer, schedule, accelerate, progress,
JSONL logs, atomic checkpoints and exact resumption.

A method supplies a module and `loss_fn(step) -> (loss, logs)`; the loop owns everything else.
Randomness is a function of (seed, phase, step): each step reseeds torch before calling
`loss_fn`, and `batch_indices` draws the step's examples from a generator seeded the same way. A run
killed at any point and resumed from its last checkpoint therefore replays exactly the steps an
uninterrupted run would have taken. RNG and optimizer state are stored too, as the record of
where the run stood.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from harness.config import TrainConfig
from harness.errors import BadInput
from harness.jsonl import fsync_directory, read_append_log, write_json_atomic, write_jsonl_atomic
from harness.locks import exclusive
from harness.progress import progress_bar

CHECKPOINT_PREFIX = "step-"
COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of the phase's learning rate
DONE_MARKER = "DONE"


def step_seed(seed: int, phase: str, step: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(phase.encode()) * 7_919 + step) % (2**63 - 1)


def batch_indices(seed: int, phase: str, step: int, population: int, batch_size: int) -> list[int]:
    """The examples of one step: a deterministic function of (seed, phase, step)."""
    generator = torch.Generator().manual_seed(step_seed(seed, phase + "/data", step))
    return torch.randint(population, (batch_size,), generator=generator).tolist()


def save_modules(module: torch.nn.Module, directory: Path, tokenizer=None) -> None:
    """Hugging Face format for every pretrained-model child (with the tokenizer, if given), safetensors
    for the remaining parameters."""
    directory.mkdir(parents=True, exist_ok=True)
    rest: dict[str, torch.Tensor] = {}
    hf_children = {name for name, child in module.named_children() if isinstance(child, PreTrainedModel)}
    if isinstance(module, PreTrainedModel):
        module.save_pretrained(directory / "model", safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory / "model")
        return
    for name in hf_children:
        getattr(module, name).save_pretrained(directory / name, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory / name)
    for key, tensor in module.state_dict().items():
        if key.split(".", 1)[0] not in hf_children:
            rest[key] = tensor.detach().cpu().contiguous()
    if rest:
        save_file(rest, str(directory / "extra.safetensors"))


def _load_hf_weights(model: PreTrainedModel, directory: Path) -> None:
    state: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or any(key not in tied and "lm_head" not in key for key in missing):
        raise RuntimeError(f"checkpoint {directory} does not match the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()


def load_modules(module: torch.nn.Module, directory: Path) -> None:
    """Inverse of `save_modules`, in place; a corrupt or truncated checkpoint is a BadInput naming it."""
    try:
        _load_modules(module, directory)
    except (SafetensorError, OSError, ValueError) as error:
        raise BadInput(f"checkpoint {directory} is corrupt or truncated ({type(error).__name__}: {error}); "
                       "delete it to resume from the previous checkpoint") from None


def _load_modules(module: torch.nn.Module, directory: Path) -> None:
    if isinstance(module, PreTrainedModel):
        _load_hf_weights(module, directory / "model")
        return
    for name, child in module.named_children():
        if isinstance(child, PreTrainedModel):
            _load_hf_weights(child, directory / name)
    extra = directory / "extra.safetensors"
    if extra.is_file():
        missing, unexpected = module.load_state_dict(load_file(str(extra)), strict=False)
        if unexpected:
            raise RuntimeError(f"checkpoint {directory} has unexpected tensors {unexpected}")


def checkpoints(phase_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a phase, oldest first (a checkpoint is complete once renamed into place)."""
    found = []
    for path in (phase_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (path / "trainer_state.pt").is_file():
            found.append((int(suffix), path))
    return sorted(found)


def final_checkpoint(phase_dir: Path) -> tuple[int, Path]:
    """(step, directory) of the phase's latest complete checkpoint; FileNotFoundError if it has none."""
    found = checkpoints(phase_dir)
    if not found:
        raise FileNotFoundError(f"no {phase_dir.name} checkpoint in {phase_dir.parent}")
    return found[-1]


def phase_done(phase_dir: Path) -> bool:
    return (phase_dir / DONE_MARKER).is_file()


@dataclass
class Phase:
    """One optimisation phase of a method (base LM, AR-SFT, LaDiR's VAE / stage 1 / stage 2)."""

    name: str
    directory: Path
    steps: int
    lr: float
    seed: int
    train: TrainConfig
    tokens_per_step: Callable[[int], int] | None = None
    schedule: str = "cosine"  # "cosine" (warm-up, then cosine to COSINE_FLOOR x lr) or "constant"
    # saved beside every Hugging Face model folder of a checkpoint, so `from_pretrained(folder)` (and
    # vLLM, `lm_eval --model hf`) loads a trained run's model and tokenizer from one path
    tokenizer: Any = None
    # Another process training the same phase: wait for it (a base checkpoint runs share) or refuse
    shared: bool = False


class Trainer:
    def __init__(self, phase: Phase, module: torch.nn.Module, accelerator=None):
        from accelerate import Accelerator

        self.phase = phase
        # The module already sits on the run's device (--device cpu on a GPU machine stays on the CPU).
        on_cpu = next(module.parameters()).device.type == "cpu"
        self.accelerator = accelerator or Accelerator(cpu=on_cpu)
        self.module = module
        parameters = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in parameters if p.ndim >= 2]
        no_decay = [p for p in parameters if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": phase.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=phase.lr,
            betas=(0.9, 0.95),
        )
        warmup = min(phase.train.warmup_steps, max(1, phase.steps // 10))

        def lr_factor(step: int) -> float:
            if phase.schedule == "constant":
                return 1.0
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, phase.steps - warmup)
            return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        self.prepared, self.optimizer, self.scheduler = self.accelerator.prepare(module, self.optimizer, self.scheduler)
        self.step = 0
        self.elapsed_before = 0.0  # training seconds of earlier processes (resumed runs), from the checkpoint
        self.started = time.time()

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write `step-N` under a temporary name and rename it: a killed run never leaves half a checkpoint."""
        root = self.phase.directory / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        if not self.accelerator.is_main_process:
            return final
        staging = root / f".tmp-{CHECKPOINT_PREFIX}{self.step:07d}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        save_modules(self.accelerator.unwrap_model(self.prepared), staging, self.phase.tokenizer)
        torch.save(
            {
                "step": self.step,
                "elapsed_s": self.elapsed_before + time.time() - self.started,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "numpy": np.random.get_state(),
                    "python": random.getstate(),
                },
            },
            staging / "trainer_state.pt",
        )
        _fsync_tree(staging)  # on disk before the rename declares the checkpoint complete
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        fsync_directory(root)
        for _, old in checkpoints(self.phase.directory)[: -self.phase.train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def resume(self) -> bool:
        # checkpoints a killed process was still writing (never renamed into place): garbage, and only
        # this process (it holds the phase's lock) could be writing one now
        for staging in (self.phase.directory / "checkpoints").glob(f".tmp-{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(staging, ignore_errors=True)
        found = checkpoints(self.phase.directory)
        if not found:
            return False
        step, path = found[-1]
        load_modules(self.accelerator.unwrap_model(self.prepared), path)
        try:
            state = torch.load(path / "trainer_state.pt", weights_only=False)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
            raise BadInput(f"checkpoint {path} has a corrupt trainer_state.pt ({type(error).__name__}: {error}); "
                           "delete it to resume from the previous checkpoint") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.step = state["step"]
        self.elapsed_before = state.get("elapsed_s", 0.0)
        return True

    # ---------------------------------------------------------------- the loop
    def fit(self, loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]]) -> Path:
        """Run the phase to `phase.steps`, resuming if a checkpoint exists; returns the final checkpoint.

        One process per phase: the phase folder is locked while it trains (harness.locks)."""
        with exclusive(self.phase.directory, f"training phase {self.phase.name!r}", wait=self.phase.shared):
            return self._fit(loss_fn)

    def _fit(self, loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]]) -> Path:
        phase = self.phase
        phase.directory.mkdir(parents=True, exist_ok=True)
        if phase_done(phase.directory):
            found = checkpoints(phase.directory)
            load_modules(self.accelerator.unwrap_model(self.prepared), found[-1][1])
            return found[-1][1]
        resumed = self.resume()
        log_path = phase.directory / "log.jsonl"
        self._truncate_log(log_path)
        writer = _tensorboard_writer(phase.directory)
        self.prepared.train()
        self.started, tokens_seen, last = time.time(), 0, None
        with progress_bar(f"{phase.name}", total=phase.steps, completed=self.step) as bar, log_path.open("a") as log:
            if resumed:
                bar.console.log(f"[{phase.name}] resumed from step {self.step}")
            while self.step < phase.steps:
                torch.manual_seed(step_seed(phase.seed, phase.name, self.step))
                loss, logs = loss_fn(self.step)
                self.optimizer.zero_grad(set_to_none=True)
                self.accelerator.backward(loss)
                grad_norm = self.accelerator.clip_grad_norm_(self.prepared.parameters(), phase.train.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                if phase.tokens_per_step is not None:
                    tokens_seen += phase.tokens_per_step(self.step - 1)
                elapsed = max(time.time() - self.started, 1e-9)
                record = {"step": self.step, "loss": float(loss.detach()), "lr": self.scheduler.get_last_lr()[0],
                          "grad_norm": float(grad_norm), **{k: float(v) for k, v in logs.items()},
                          "elapsed_s": round(self.elapsed_before + elapsed, 2)}
                if tokens_seen:
                    record["tokens_per_s"] = tokens_seen / elapsed
                last = record
                if self.step % phase.train.log_every == 0 or self.step == phase.steps:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if writer is not None:
                        for key, value in record.items():
                            if key != "step":
                                writer.add_scalar(f"{phase.name}/{key}", value, self.step)
                bar.update(advance=1, info=_short(record))
                if self.step % phase.train.checkpoint_every == 0 or self.step == phase.steps:
                    self.save_checkpoint()
        if self.step == 0:
            self.save_checkpoint()
        if writer is not None:
            writer.close()
        write_json_atomic(phase.directory / DONE_MARKER, {"steps": phase.steps, "last": last})
        return checkpoints(phase.directory)[-1][1]

    def _truncate_log(self, log_path: Path) -> None:
        """Drop log lines past the checkpoint we resumed from, so the log never repeats a step."""
        if not log_path.is_file():
            return
        records, _ = read_append_log(log_path)  # a line torn by a kill is dropped
        write_jsonl_atomic(log_path, [r for r in records if r.get("step", 0) <= self.step])


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _short(record: dict) -> str:
    parts = [f"loss {record['loss']:.4f}"]
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:.0f} tok/s")
    return "  ".join(parts)


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    try:
        return SummaryWriter(log_dir=str(directory / "tensorboard"))
    except Exception:
        return None
