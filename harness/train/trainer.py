"""The training loop every method's phases run through: optimizer, schedule, accelerate, progress,
JSONL logs, atomic checkpoints and exact resumption.

A method supplies a module and `loss_fn(step, shard) -> (loss, logs)`; the loop owns everything
else. `optimizer_step` is one update, read top to bottom. Randomness is a function of (seed, phase,
step) (`harness.train.seeding`): a run killed at any point and resumed from its last checkpoint
replays exactly the steps an uninterrupted run would have taken. RNG and optimizer state are stored
too, as the record of where the run stood. Each step's training compute (the tokens through every
backbone call of its loss calls and their FLOPs, harness.compute) is summed into the log and the
DONE marker, resumptions included.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from harness.compute import Compute, ComputeCounter
from harness.config import TrainConfig, check_parallel_layout
from harness.errors import BadInput, Stopped
from harness.jsonl import (
    fsync_directory,
    read_append_log,
    write_json_atomic,
    write_jsonl_atomic,
)
from harness.locks import exclusive
from harness.progress import progress_bar
from harness.train.checkpoint import (
    CHECKPOINT_PREFIX,
    DONE_MARKER,
    checkpoints,
    fsync_tree,
    load_modules,
    phase_done,
    read_modules,
    save_modules,
)
from harness.train.lora import is_lora, load_lora, save_lora
from harness.train.seeding import Shard, micro_seed

COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of the phase's learning rate


LossFn = Callable[[int, Shard], tuple[torch.Tensor, dict[str, float]]]


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
    """One phase's optimisation, on one process or many (`accelerate launch`, `torchrun`).

    A step's global batch is split into (processes x `train.grad_accum_steps`) micro-batches; process r
    runs micro-batches r * grad_accum_steps + a, each reseeded by `micro_seed`, and the gradients are
    averaged over all of them, so the update is the one a single process taking the whole batch makes
    (up to float rounding). Only the main process writes logs, checkpoints and the DONE marker.
    """

    def __init__(self, phase: Phase, module: torch.nn.Module, accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        self.phase = phase
        train = phase.train
        # The module already sits on the run's device (--device cpu on a GPU machine stays on the CPU).
        device_type = next(module.parameters()).device.type
        # accelerate's backward divides the loss by gradient_accumulation_steps: the micro-batch losses sum
        # to the mean over the process's share of the batch
        self.accelerator = accelerator or Accelerator(cpu=device_type == "cpu", mixed_precision=train.mixed_precision,
                                                      gradient_accumulation_steps=train.grad_accum_steps)
        check_parallel_layout(train, self.accelerator.num_processes, device_type)
        kind = self.accelerator.distributed_type
        if kind not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.FSDP):
            raise BadInput(f"accelerate's {kind} is not supported: launch with DDP (multi-GPU or --cpu) or FSDP")
        self.fsdp = kind == DistributedType.FSDP
        # FSDP2 shards the module in place, so the methods' own calls to it (never to a wrapper) run
        # sharded; FSDP1 only works through its wrapper
        if self.fsdp and not self.accelerator.is_fsdp2:
            raise BadInput("FSDP needs fsdp_version: 2 in the accelerate config (see harness/presets/accelerate/)")
        if self.fsdp and is_lora(module):
            raise BadInput("train.lora_r > 0 is not supported under FSDP; launch with a DDP config")
        self.ddp = self.accelerator.num_processes > 1 and not self.fsdp
        self.module = module
        if train.gradient_checkpointing:
            for child in module.modules():
                if isinstance(child, PreTrainedModel) and child.supports_gradient_checkpointing:
                    # non-reentrant: works with frozen inputs (LoRA) and keeps the RNG replay exact
                    child.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        parameters = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in parameters if p.ndim >= 2]
        no_decay = [p for p in parameters if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=phase.lr,
            betas=(0.9, 0.95),
        )
        warmup = min(train.warmup_steps, max(1, phase.steps // 10))

        def lr_factor(step: int) -> float:
            if phase.schedule == "constant":
                return 1.0
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, phase.steps - warmup)
            return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        # Not prepared: accelerate's scheduler steps once per process, and a step here is one global batch.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        if self.ddp:
            # The methods call their module directly, never a DDP wrapper, so DDP's gradient hooks would
            # never fire: the trainer averages the gradients itself (`_average_gradients`).
            self.prepared, self.optimizer = module, self.accelerator.prepare(self.optimizer)
        else:
            self.prepared, self.optimizer = self.accelerator.prepare(module, self.optimizer)
        self.step = 0
        self.saved_step: int | None = None  # the step of the last checkpoint written or resumed from
        self.elapsed_before = 0.0  # training seconds of earlier processes (resumed runs), from the checkpoint
        self.compute = Compute()  # since step 0, over every process (resumed runs: restored from the checkpoint)
        self._counter = ComputeCounter()
        self.started = time.time()

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write `step-N` under a temporary name and rename it: a killed run never leaves half a checkpoint.

        Every process calls it (under FSDP, gathering the full weights is a collective); the main process
        writes, and all wait for it, so no process reads a checkpoint before it is complete."""
        root = self.phase.directory / "checkpoints"
        final = root / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        model = self.accelerator.unwrap_model(self.prepared)
        state = self.accelerator.get_state_dict(self.prepared) if self.fsdp else None
        optimizer_state = self._optimizer_state()
        if self.accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            staging = root / f".tmp-{CHECKPOINT_PREFIX}{self.step:07d}-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            if is_lora(model):
                save_lora(model, staging, self.phase.tokenizer)
            else:
                save_modules(model, staging, self.phase.tokenizer, state)
            torch.save(
                {
                    "step": self.step,
                    "elapsed_s": self.elapsed_before + time.time() - self.started,
                    "compute": self.compute.as_json(),
                    "optimizer": optimizer_state,
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
            fsync_tree(staging)  # on disk before the rename declares the checkpoint complete
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            fsync_directory(root)
            for _, old in checkpoints(self.phase.directory)[: -self.phase.train.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.saved_step = self.step
        return final

    def _optimizer_state(self) -> dict:
        # Under DDP every process holds the whole optimizer state, so the main one's is the state; under
        # FSDP each holds a shard, gathered here into the same full, process-count-free form.
        if not self.fsdp:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(self.prepared, self.optimizer.optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _load_weights(self, path: Path) -> None:
        model = self.accelerator.unwrap_model(self.prepared)
        if is_lora(model):
            load_lora(model, path)
        elif self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            set_model_state_dict(self.prepared, read_modules(model, path),
                                 options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            load_modules(model, path)

    def resume(self) -> bool:
        # checkpoints a killed process was still writing (never renamed into place): garbage, and only
        # this run (its main process holds the phase's lock) could be writing one now
        if self.accelerator.is_main_process:
            for staging in (self.phase.directory / "checkpoints").glob(f".tmp-{CHECKPOINT_PREFIX}*"):
                shutil.rmtree(staging, ignore_errors=True)
        found = checkpoints(self.phase.directory)
        if not found:
            return False
        step, path = found[-1]
        self._load_weights(path)
        try:
            # on the CPU: every process reads it, and load_state_dict moves the state to the parameters
            state = torch.load(path / "trainer_state.pt", weights_only=False, map_location="cpu")
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
            raise BadInput(f"checkpoint {path} has a corrupt trainer_state.pt ({type(error).__name__}: {error}); "
                           "delete it to resume from the previous checkpoint") from None
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            set_optimizer_state_dict(self.prepared, self.optimizer.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.step = self.saved_step = state["step"]
        self.elapsed_before = state.get("elapsed_s", 0.0)
        # a checkpoint from before compute was recorded resumes without it: the phase's total stays unknown
        self.compute = Compute(**state["compute"]) if "compute" in state else None
        return True

    # ---------------------------------------------------------------- the loop
    def fit(self, loss_fn: LossFn) -> Path:
        """Run the phase to `phase.steps`, resuming if a checkpoint exists; returns the final checkpoint.

        One run per phase: the main process locks the phase folder while it trains (harness.locks), and
        the other processes of its launch start once it holds the lock."""
        with self._attention_for_autocast():
            if not self.accelerator.is_main_process:
                self.accelerator.wait_for_everyone()
                return self._fit(loss_fn)
            with exclusive(self.phase.directory, f"training phase {self.phase.name!r}", wait=self.phase.shared):
                self.accelerator.wait_for_everyone()
                return self._fit(loss_fn)

    @contextmanager
    def _attention_for_autocast(self):
        """bf16 on the CPU trains with eager attention, then puts each model's own attention back.

        Under CPU autocast, sdpa takes its bf16 flash-attention kernel, whose backward runs several times
        slower than its fp32 one and eats what AMX saves on the matmuls; eager attention's matmuls are
        autocast to bf16 like every Linear, its softmax kept in fp32 (results/bench/cpu-bf16/). Sampling
        is untouched: outside this phase the models attend as they were built to."""
        swapped = []
        if self.phase.train.mixed_precision == "bf16" and self.accelerator.device.type == "cpu":
            for model in self.module.modules():
                if isinstance(model, PreTrainedModel) and model.config._attn_implementation == "sdpa":
                    model.set_attn_implementation("eager")
                    swapped.append(model)
        try:
            yield
        finally:
            for model in swapped:
                model.set_attn_implementation("sdpa")

    def optimizer_step(self, loss_fn: LossFn) -> tuple[float, dict[str, float], float]:
        """One update: every micro-batch of this process (reseeded, its shard of the step's examples),
        gradients averaged over all micro-batches of all processes, clipped, one AdamW step, one
        schedule step. Returns the loss and logs averaged over every micro-batch, and the grad norm; the
        step's compute is added to `self.compute`."""
        accelerator, accum = self.accelerator, self.phase.train.grad_accum_steps
        micro_batches = accelerator.num_processes * accum
        self.optimizer.zero_grad(set_to_none=True)
        sums, keys = [], []
        counted = self._counter.total = Compute()
        for slot in range(accum):
            shard = Shard(accelerator.process_index * accum + slot, micro_batches)
            torch.manual_seed(micro_seed(self.phase.seed, self.phase.name, self.step, shard.index, micro_batches))
            # FSDP reduces gradients in every backward unless told not to; the last micro-batch's does it once
            skip_sync = self.fsdp and slot < accum - 1
            with accelerator.no_sync(self.prepared) if skip_sync else nullcontext():
                with accelerator.autocast(), self._counter:
                    loss, logs = loss_fn(self.step, shard)
                accelerator.backward(loss)  # divided by accum: the micro-batch gradients sum to the mean
            keys = sorted(logs)
            values = [float(loss.detach()), *(float(logs[k]) for k in keys)]
            sums = values if not sums else [a + b for a, b in zip(sums, values, strict=True)]
        if self.ddp:
            self._average_gradients()
        grad_norm = accelerator.clip_grad_norm_(self.prepared.parameters(), self.phase.train.grad_clip)
        self.optimizer.step()
        if not self.optimizer.step_was_skipped:  # fp16: an overflowing step is not a schedule step
            self.scheduler.step()
        self.step += 1
        means = self._mean_over_micro_batches(sums, micro_batches)
        if self.compute is not None:
            tokens, flops = self._summed_over_processes([counted.forward_tokens, counted.flops])
            self.compute = Compute(self.compute.forward_tokens + int(tokens), self.compute.flops + flops)
        return means[0], dict(zip(keys, means[1:], strict=True)), float(grad_norm)

    def _fit(self, loss_fn: LossFn) -> Path:
        phase = self.phase
        main = self.accelerator.is_main_process
        phase.directory.mkdir(parents=True, exist_ok=True)
        if phase_done(phase.directory):
            found = checkpoints(phase.directory)
            self._load_weights(found[-1][1])
            return found[-1][1]
        resumed = self.resume()
        if self.ddp:
            # what DDP does on wrapping: every replica starts from the main process's exact weights
            for tensor in self.module.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        log_path = phase.directory / "log.jsonl"
        if main:
            self._truncate_log(log_path)
        writer = _tensorboard_writer(phase.directory) if main else None
        self.prepared.train()
        self.started, tokens_seen, last = time.time(), 0, None
        with progress_bar(f"{phase.name}", total=phase.steps, completed=self.step, quiet=not main) as bar, \
                (log_path.open("a") if main else nullcontext()) as log, stop_requests() as stop:
            if resumed and main:
                bar.console.log(f"[{phase.name}] resumed from step {self.step}")
            while self.step < phase.steps and not stop.requested(self):
                loss, logs, grad_norm = self.optimizer_step(loss_fn)
                if phase.tokens_per_step is not None:
                    tokens_seen += phase.tokens_per_step(self.step - 1)
                elapsed = max(time.time() - self.started, 1e-9)
                record = {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                          "grad_norm": grad_norm, **logs, "elapsed_s": round(self.elapsed_before + elapsed, 2)}
                if tokens_seen:
                    record["tokens_per_s"] = tokens_seen / elapsed
                if self.compute is not None:  # cumulative: the DONE marker's last record holds the phase's total
                    record.update(self.compute.as_json())
                last = record
                if main and (self.step % phase.train.log_every == 0 or self.step == phase.steps):
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
        stopping = stop.requested(self)  # every process asks, so all agree (a signal in the last step too)
        if self.step < phase.steps:  # stopped on request: keep the finished step, then leave
            if self.saved_step != self.step:
                self.save_checkpoint()
            raise Stopped(f"stopped by {stop.signal_name} at step {self.step}/{phase.steps} of phase "
                          f"{phase.name!r}; checkpoint saved, the same command resumes from it")
        if main:
            write_json_atomic(phase.directory / DONE_MARKER, {"steps": phase.steps, "last": last})
        self.accelerator.wait_for_everyone()
        if stopping:
            raise Stopped(f"stopped by {stop.signal_name} after finishing phase {phase.name!r}; the same command "
                          f"goes on from there")
        return checkpoints(phase.directory)[-1][1]

    def _mean_over_micro_batches(self, sums: list[float], micro_batches: int) -> list[float]:
        sums = self._summed_over_processes(sums)
        return [value / micro_batches for value in sums] if micro_batches > 1 else sums

    def _summed_over_processes(self, values: list[float]) -> list[float]:
        if self.accelerator.num_processes == 1:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        torch.distributed.all_reduce(total)
        return total.tolist()

    def _average_gradients(self) -> None:
        """Mean of the processes' gradients (what DDP's hooks would compute), in buckets of one dtype.

        A parameter keeps `grad=None` only when no process used it, as one process would have left it."""
        parameters = [p for p in self.module.parameters() if p.requires_grad]
        if not parameters:
            return
        used = torch.tensor([p.grad is not None for p in parameters], dtype=torch.int64, device=parameters[0].device)
        torch.distributed.all_reduce(used)
        grads = []
        for parameter, users in zip(parameters, used.tolist(), strict=True):
            if users:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                grads.append(parameter.grad)
        world = self.accelerator.num_processes
        for bucket in _buckets(grads, GRAD_BUCKET_ELEMENTS):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            torch.distributed.all_reduce(flat)
            flat /= world
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
                offset += grad.numel()

    def _truncate_log(self, log_path: Path) -> None:
        """Drop log lines past the checkpoint we resumed from, so the log never repeats a step."""
        if not log_path.is_file():
            return
        records, _ = read_append_log(log_path)  # a line torn by a kill is dropped
        write_jsonl_atomic(log_path, [r for r in records if r.get("step", 0) <= self.step])



class StopRequests:
    """Whether SIGTERM or SIGUSR1 arrived (`stop_requests`), agreed by every process of a launch."""

    def __init__(self):
        self.signal_name: str | None = None

    def requested(self, trainer: Trainer) -> bool:
        flag = trainer._summed_over_processes([1.0 if self.signal_name else 0.0])  # all stop after one step
        if flag[0] and not self.signal_name:
            self.signal_name = "a signal to another process"
        return bool(flag[0])


@contextmanager
def stop_requests():
    """During the training loop, SIGTERM (a scheduler's preemption, `kill`) and SIGUSR1 (SLURM's
    `--signal`) ask it to stop after the step it is in and save a checkpoint, instead of killing it
    mid-step and losing everything since the last scheduled checkpoint. Outside the loop they act as
    they did before. Handlers can only be set from the main thread; elsewhere nothing changes."""
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return

    def note(number, frame):
        requests.signal_name = signal.Signals(number).name

    previous = {number: signal.signal(number, note) for number in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield requests
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


GRAD_BUCKET_ELEMENTS = 2**25  # gradients all-reduced per call: few calls, bounded extra memory



def _buckets(grads: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        if buckets and buckets[-1][0].dtype == grad.dtype and buckets[-1][0].device == grad.device \
                and size + grad.numel() <= limit:
            buckets[-1].append(grad)
            size += grad.numel()
        else:
            buckets.append([grad])
            size = grad.numel()
    return buckets



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

