"""Checkpoints: Hugging Face folders for every pretrained-model child (so `from_pretrained`, vLLM
and lm-eval load a trained run from one path), safetensors for the rest, written under a temporary
name and renamed into place so a killed run never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from harness.errors import BadInput
from harness.locks import LOCK_FILE

CHECKPOINT_PREFIX = "step-"

DONE_MARKER = "DONE"



def save_modules(module: torch.nn.Module, directory: Path, tokenizer=None,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """Hugging Face format for every pretrained-model child (with the tokenizer, if given), safetensors
    for the remaining parameters. `state` replaces the module's own state dict (the full weights FSDP
    gathered from its shards)."""
    directory.mkdir(parents=True, exist_ok=True)
    rest: dict[str, torch.Tensor] = {}
    hf_children = {name for name, child in module.named_children() if isinstance(child, PreTrainedModel)}
    if isinstance(module, PreTrainedModel):
        module.save_pretrained(directory / "model", safe_serialization=True, state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory / "model")
        return
    for name in hf_children:
        child_state = None if state is None else {k[len(name) + 1:]: v for k, v in state.items()
                                                  if k.startswith(name + ".")}
        getattr(module, name).save_pretrained(directory / name, safe_serialization=True, state_dict=child_state)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory / name)
    for key, tensor in (module.state_dict() if state is None else state).items():
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



def read_modules(module: torch.nn.Module, directory: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors named as in `module.state_dict()`, for loaders that take a full state dict
    (FSDP's, which scatters it over the shards)."""
    def read(folder: Path, prefix: str = "") -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for file in sorted(folder.glob("*.safetensors")):
            state.update({prefix + key: value for key, value in load_file(str(file)).items()})
        return state

    if isinstance(module, PreTrainedModel):
        return read(directory / "model")
    state: dict[str, torch.Tensor] = {}
    for name, child in module.named_children():
        if isinstance(child, PreTrainedModel):
            state.update(read(directory / name, name + "."))
    extra = directory / "extra.safetensors"
    if extra.is_file():
        state.update(load_file(str(extra)))
    return state



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



def link_phase(source: Path, target: Path, extra: dict[str, str] | None = None) -> bool:
    """Make `target` a copy of the finished phase folder `source` (hard links: no space, the same
    bytes) plus the `extra` files (name -> text), built under a temporary name and renamed into place,
    so a reader sees all of it or none. False where `target` already exists (another process got there
    first); the lock file stays."""
    if target.exists():
        return False

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another filesystem
            shutil.copy2(src, dst)

    # built beside the parent folder, not in it: a crash mid-copy leaves no phase-like folder in a run
    partial = target.parent.parent / f".partial-{target.parent.name}-{target.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, copy_function=link_or_copy, ignore=shutil.ignore_patterns(LOCK_FILE))
    for name, text in (extra or {}).items():
        (partial / name).unlink(missing_ok=True)  # a hard link: writing through it would change the source
        (partial / name).write_text(text)
    try:
        partial.rename(target)
    except OSError:
        shutil.rmtree(partial)
        return False
    return True


def fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())

