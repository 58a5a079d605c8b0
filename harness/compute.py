"""Compute accounting: the tokens that pass through a backbone's forward and the FLOPs they cost,
counted by forward hooks, so every method is measured the same way whatever its loss or its sampler
does (training: every loss call of every phase, rollouts and frozen encoders included; sampling:
every forward of every denoising pass or decoded token).

A backbone is any Hugging Face `PreTrainedModel`; a call of one inside another (a causal LM's inner
`LlamaModel`) is counted once, as the outer call. FLOPs of one call over B x L positions (padding
included: it is computed) attending to C key positions, after Kaplan et al. (2020, Table 1) and
PaLM (Chowdhery et al. 2022, App. B), with N the parameters that enter matrix multiplies (all but
the input embedding table, which is a lookup; a tied output head counted once):

    forward                 2 N B L + 4 n_layer d_attn B L C
    activation gradients    2 N B L + 8 n_layer d_attn B L C   (when a gradient flows through the call)
    weight gradients        2 N_trainable B L

so a fully trained call costs 6 N B L + 12 n_layer d_attn B L C (PaLM's 6N + 12 L H Q T per token),
a frozen one that passes gradients back 4 N B L + ..., one under `no_grad` 2 N B L + .... The
attention term counts every key position (an upper bound under a causal mask), and the output head
is counted at every position even where a sampler keeps only the last logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)

TRAIN_FLOPS_FORMULA = ("6 N D + 12 n_layer d_attn D C over the tokens D of every backbone call of every loss call "
                       "(2 N D + 4 n_layer d_attn D C under no_grad, 4 N D + 12 n_layer d_attn D C through a frozen "
                       "backbone); N = matmul parameters, C = key positions attended")


@dataclass
class Compute:
    """What passed through the backbones: tokens (positions the attention mask marks real) and FLOPs."""

    forward_tokens: int = 0
    flops: float = 0.0

    def as_json(self) -> dict[str, float]:
        return {"forward_tokens": int(self.forward_tokens), "flops": float(self.flops)}


@dataclass(frozen=True)
class _Shape:
    matmul_params: int
    trainable_matmul_params: int
    layers: int
    attention_width: int  # d_attn = heads x head dim


def _shape(model: torch.nn.Module) -> _Shape:
    from transformers import PreTrainedModel

    parameters = list(model.parameters())
    matmul = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    embeddings = model.get_input_embeddings() if isinstance(model, PreTrainedModel) else None
    table = getattr(embeddings, "weight", None)
    if table is not None:
        head = model.get_output_embeddings()
        if head is None or head.weight is not table:  # a tied head multiplies by the table: keep it
            matmul -= table.numel()
            trainable -= table.numel() if table.requires_grad else 0
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(getattr(text_config, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text_config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(text_config, "hidden_size", 0) or 0)
    head_dim = getattr(text_config, "head_dim", None) or (hidden // heads if heads else 0)
    return _Shape(matmul, trainable, layers, heads * int(head_dim))


def call_flops(shape: _Shape, rows: int, length: int, context: int, gradient: bool) -> float:
    """FLOPs of one backbone call (the module docstring's formula)."""
    positions = rows * length
    linear = 2 * shape.matmul_params * positions
    attention = 4 * shape.layers * shape.attention_width * positions * context
    if not gradient:
        return float(linear + attention)
    return float(2 * linear + 3 * attention + 2 * shape.trainable_matmul_params * positions)


def _first_tensor(args: tuple, kwargs: dict[str, Any], *names: str) -> torch.Tensor | None:
    for name in names:
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor):
            return value
    return args[0] if args and isinstance(args[0], torch.Tensor) else None


class ComputeCounter:
    """Counts the backbone calls made while it is entered (`with counter: ...`) into `total`.

    Hooks are global (every module call in the process), so a backbone the method calls outside the
    module being trained (a frozen VAE in a rollout) is counted too; they are removed on exit. Token
    counts read from an attention mask stay on its device until the exit: no synchronisation per call."""

    def __init__(self) -> None:
        self.total = Compute()
        self._shapes: dict[int, tuple[torch.nn.Module, _Shape]] = {}
        self._depth = 0
        self._handles: list = []
        self._pending: list[torch.Tensor] = []

    def __enter__(self) -> Self:
        from transformers import PreTrainedModel

        self._depth = 0

        def before(module, args):
            if isinstance(module, PreTrainedModel):
                self._depth += 1

        def after(module, args, kwargs, output):
            if not isinstance(module, PreTrainedModel):
                return
            self._depth -= 1
            if self._depth == 0:
                self._count(module, args, kwargs)

        self._handles = [register_module_forward_pre_hook(before),
                         register_module_forward_hook(after, with_kwargs=True, always_call=True)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.total.forward_tokens += sum(int(count) for count in self._pending)
        self._pending = []

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        inputs = _first_tensor(args, kwargs, "input_ids", "inputs_embeds")
        if inputs is None or inputs.dim() < 2:
            return
        rows, length = inputs.shape[0], inputs.shape[1]
        mask = kwargs.get("attention_mask")
        real = rows * length
        if isinstance(mask, torch.Tensor) and mask.dim() >= 2:
            context = mask.shape[-1]
            if mask.dim() == 2:  # (rows, keys): the last `length` columns mark this call's real tokens
                self._pending.append(mask[:, -length:].bool().sum())
                real = 0
            elif mask.dim() == 4 and mask.dtype == torch.bool and mask.shape[-2] == mask.shape[-1] == length:
                # a packed (rows, 1, queries, keys) mask (`harness.lm.SharedContextPack`): real tokens see
                # themselves (the additive masks of other callers count every position, padding too)
                self._pending.append(mask[:, 0].diagonal(dim1=-2, dim2=-1).sum())
                real = 0
        else:
            cache = kwargs.get("past_key_values")
            context = cache.get_seq_length() if hasattr(cache, "get_seq_length") else length
        cached = self._shapes.get(id(module))
        if cached is None or cached[0] is not module:
            cached = self._shapes[id(module)] = (module, _shape(module))
        shape = cached[1]
        gradient = torch.is_grad_enabled() and (
            shape.trainable_matmul_params > 0
            or any(isinstance(v, torch.Tensor) and v.requires_grad for v in (*args, *kwargs.values())))
        self.total.forward_tokens += real
        self.total.flops += call_flops(shape, rows, length, max(context, length), gradient)


def phase_compute(phase_dir: Path) -> dict[str, float] | None:
    """A finished phase's training compute (its DONE marker's last record), None if it predates the record."""
    from harness.train.checkpoint import DONE_MARKER

    marker = phase_dir / DONE_MARKER
    if not marker.is_file():
        return None
    done = json.loads(marker.read_text())
    last = done.get("last") or {}
    if done.get("steps") == 0:  # a phase given no steps trained nothing
        return {"forward_tokens": 0, "flops": 0.0, "steps": 0}
    if "flops" not in last or "forward_tokens" not in last:
        return None
    return {"forward_tokens": int(last["forward_tokens"]), "flops": float(last["flops"]), "steps": last.get("step")}


def training_compute(run_dir: Path, base_phase: Path | None) -> dict[str, Any]:
    """Training compute of a run: every finished phase of the run and the shared base it started from
    (`base_phase`, None for a pretrained model whose pretraining is not ours to count). `flops` and
    `forward_tokens` are the sums, None when a phase was trained before compute was recorded. What
    counts is the optimisation (every loss call); passes made once a phase is done (a VAE's latent
    statistics and report) and validation are not training compute."""
    from harness.train.checkpoint import DONE_MARKER

    phases: dict[str, dict | None] = {}
    if base_phase is not None and (base_phase / DONE_MARKER).is_file():
        phases["base"] = phase_compute(base_phase)
    for marker in sorted(run_dir.glob(f"*/{DONE_MARKER}")):
        phases[marker.parent.name] = phase_compute(marker.parent)
    known = all(record is not None for record in phases.values()) and bool(phases)
    return {
        "flops": sum(r["flops"] for r in phases.values()) if known else None,
        "forward_tokens": sum(r["forward_tokens"] for r in phases.values()) if known else None,
        "phases": phases,
        "formula": TRAIN_FLOPS_FORMULA,
    }
