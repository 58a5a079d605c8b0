"""Run configuration: preset, then YAML file, then command-line overrides, validated field by field.

One `RunConfig` describes a run completely and is written to `runs/NAME/config.yaml`, so a run can
be resumed, evaluated or reproduced from its directory alone. Method-specific knobs live in
`method_options` and are validated by the method's own options dataclass (see harness.methods).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import BadInput

PRESET_DIR = Path(__file__).parent / "presets"
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class ModelConfig:
    """`name` is "tiny" (build from the sizes below), a local model directory, a hub id, or a .gguf path."""

    name: str = "tiny"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_length: int = 256
    dtype: str = "float32"

    @property
    def from_scratch(self) -> bool:
        return self.name == "tiny"


@dataclass
class TrainConfig:
    """The shared fine-tuning budget: every method gets `steps` optimizer steps of `batch_size`."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    # The shared base checkpoint (LM on the task's training text), trained once per task/model/seed
    # when the backbone starts from scratch; a pretrained backbone is its own base.
    base_steps: int = 600
    base_lr: float = 1e-3
    # A step's batch is split into (processes x grad_accum_steps) micro-batches; the update equals one
    # process taking the whole batch (harness.train.trainer).
    grad_accum_steps: int = 1
    mixed_precision: str = "no"  # no, bf16 (autocast; GPU or CPU) or fp16 (autocast + loss scaling; GPU only)
    gradient_checkpointing: bool = False  # recompute activations in backward: memory for time
    lora_r: int = 0  # > 0: fine-tune LoRA adapters of this rank on pretrained backbones (needs peft)


@dataclass
class EvalConfig:
    k: int = 10
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 100
    split: str = "test"


@dataclass
class RunConfig:
    method: str = "ar-sft"
    task: str = "countdown4"
    seed: int = 0
    preset: str = "tiny"
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    task_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        from harness.jsonl import atomic_open

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as handle:
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise BadInput(f"{path}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping at the top level")
    return data


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise BadInput naming the field."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        errors = []
        for option in options:  # the first type that takes the value (a mapping, else a list of them)
            try:
                return _coerce(value, option, where)
            except BadInput as error:
                errors.append(error)
        raise errors[0]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise BadInput(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        (item_type, *_) = typing.get_args(annotation) or (str,)
        return [_coerce(v, item_type, where) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise BadInput(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        # YAML reads "3e-4" as a string and 600 as an int; accept both spellings, reject 2.5 for an int.
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if annotation is int and number != int(number):
                raise ValueError
        except (TypeError, ValueError):
            raise BadInput(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        return annotation(number) if annotation is float else int(number)
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise BadInput(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls, data: dict[str, Any], where: str):
    """Instantiate `cls` from a mapping, rejecting unknown keys and badly typed values."""
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInput(f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in data.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = build_dataclass(annotation, value, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = _coerce(value, annotation, f"{where}.{name}" if where else name)
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """`train.lr=3e-4` -> {"train": {"lr": "3e-4"}}; values stay strings until validated by type."""
    if "=" not in text:
        raise BadInput(f"override {text!r} is not of the form key=value (e.g. train.lr=3e-4)")
    key, value = text.split("=", 1)
    parsed: Any = yaml.safe_load(value) if value else ""
    if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
        parsed = value.strip()  # YAML 1.1 reads no / yes / off / on as booleans: train.mixed_precision=no is a word
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = parsed
    return nested


def load_config(
    preset: str = "tiny",
    config_file: str | Path | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> RunConfig:
    """Preset < config file < overrides; every value validated against the dataclasses."""
    preset_path = PRESET_DIR / f"{preset}.yaml"
    if not preset_path.is_file():
        raise BadInput(f"unknown preset {preset!r} (known: {', '.join(preset_names())})")
    data = read_yaml(preset_path)
    if config_file is not None:
        data = _deep_merge(data, read_yaml(Path(config_file)))
    for override in overrides or []:
        data = _deep_merge(data, override)
    data["preset"] = data.get("preset", preset)
    config = build_dataclass(RunConfig, data, "")
    _validate_ranges(config)
    return config


def _validate_ranges(config: RunConfig) -> None:
    checks = [
        (config.train.steps >= 0, "train.steps must be >= 0"),
        (config.train.base_steps >= 0, "train.base_steps must be >= 0"),
        (config.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (config.train.lr > 0, "train.lr must be > 0"),
        (config.train.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
        (config.train.grad_accum_steps >= 1, "train.grad_accum_steps must be >= 1"),
        (config.train.mixed_precision in MIXED_PRECISION, f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)}"),
        (config.train.lora_r >= 0, "train.lora_r must be >= 0"),
        (config.train.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        (config.eval.k >= 1, "eval.k must be >= 1"),
        (config.eval.temperature >= 0, "eval.temperature must be >= 0"),
        (0 < config.eval.top_p <= 1, "eval.top_p must be in (0, 1]"),
        (config.model.hidden_size % config.model.num_heads == 0, "model.hidden_size must be divisible by model.num_heads"),
        (config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:"), "device must be auto, cpu or cuda[:N]"),
    ]
    for ok, message in checks:
        if not ok:
            raise BadInput(f"bad config value: {message}")


def check_parallel_layout(train: TrainConfig, processes: int, device_type: str) -> None:
    """The batch must split evenly into micro-batches, and fp16 needs a GPU: rejected before a run
    directory is written rather than silently trained differently from what its config says."""
    from harness.train.distributed import (
        fsdp_requested,  # here: it imports torch, which `ladir-bench methods` need not
    )

    micro = processes * train.grad_accum_steps
    if train.batch_size % micro:
        raise BadInput(f"train.batch_size={train.batch_size} is not divisible by {processes} process(es) x "
                       f"train.grad_accum_steps={train.grad_accum_steps} = {micro} micro-batches")
    # accelerate turns an FSDP config into FSDP only for GPU processes: CPU ones would train as plain
    # data parallelism, every process holding the whole model, under a config that says sharded
    if fsdp_requested() and device_type != "cuda":
        raise BadInput(f"FSDP (ACCELERATE_USE_FSDP, from an FSDP accelerate config) needs GPUs; this run is on "
                       f"{device_type}: launch without the FSDP config (data parallel) or on GPUs")
    # accelerate runs bf16 autocast on the CPU too, but fp16's loss scaler only on a GPU
    if train.mixed_precision == "fp16" and device_type != "cuda":
        raise BadInput(f"train.mixed_precision=fp16 needs a GPU; this run is on {device_type} "
                       "(set train.mixed_precision=bf16 or no)")
