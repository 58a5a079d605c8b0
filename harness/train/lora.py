"""LoRA fine-tuning through peft (`train.lora_r > 0`, the `[peft]` extra).

Checkpoints stay plain Hugging Face folders: the adapters are merged into a copy of the model for
the folder everything else loads (evaluation, vLLM, lm_eval), and the adapter weights alone are kept
beside it, which is what resuming needs (the frozen base comes from the phase's starting point).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import torch

from harness.errors import BadInput

ADAPTER_FILE = "lora.safetensors"


def check_available() -> None:
    if importlib.util.find_spec("peft") is None:
        raise BadInput("train.lora_r > 0 needs peft: pip install 'ladir-bench[peft]'")


def apply_lora(model: torch.nn.Module, r: int) -> torch.nn.Module:
    """`model` with rank-`r` adapters on every linear layer but the output head, only they trainable;
    `r == 0` returns it unchanged."""
    if r == 0:
        return model
    check_available()
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear"))


def is_lora(module: torch.nn.Module) -> bool:
    if importlib.util.find_spec("peft") is None:
        return False
    from peft import PeftModel

    return isinstance(module, PeftModel)


def merged(model) -> torch.nn.Module:
    """A plain model with the adapters folded into its weights; `model` itself keeps training."""
    return copy.deepcopy(model).merge_and_unload()


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_lora(model, directory: Path, tokenizer=None) -> None:
    from safetensors.torch import save_file

    from harness.train.checkpoint import save_modules

    save_modules(merged(model), directory, tokenizer)
    save_file(adapter_state(model), str(directory / ADAPTER_FILE))


def load_lora(model, directory: Path) -> None:
    from safetensors.torch import load_file

    path = directory / ADAPTER_FILE
    if not path.is_file():
        raise BadInput(f"checkpoint {directory} has no {ADAPTER_FILE}: it was not trained with train.lora_r > 0")
    state = load_file(str(path))
    expected = set(adapter_state(model))
    if set(state) != expected:
        raise BadInput(f"checkpoint {directory}: its LoRA adapters do not match train.lora_r={model.peft_config['default'].r}")
    model.load_state_dict(state, strict=False)
