"""Which process of a multi-process launch (`accelerate launch`, `torchrun`) this is, and a barrier.

The launchers export WORLD_SIZE / RANK / LOCAL_RANK. Reading those instead of creating accelerate's
`PartialState` keeps single-process runs free of any distributed state: a `PartialState` made before
the trainer's `Accelerator(cpu=True)` would pin the process to the GPU and make that call fail.
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def fsdp_requested() -> bool:
    """`accelerate launch` with an FSDP config exports ACCELERATE_USE_FSDP=true."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def init(device: torch.device) -> torch.device:
    """Join the launch's process group (a no-op alone); returns the device this rank computes on:
    `cuda` becomes this rank's own GPU, so ranks never share GPU 0."""
    if world_size() == 1:
        return device
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")
    return state.device if device.type == "cuda" else device


def barrier() -> None:
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
