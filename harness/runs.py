"""Run directories: `runs/NAME/` holds the resolved config, every phase's checkpoints and logs, and
the evaluation results. Creating a run twice with the same config resumes it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml

from harness.backbone import check_model_available
from harness.config import RunConfig, build_dataclass, check_parallel_layout
from harness.context import RunContext
from harness.errors import BadInput
from harness.methods import Method, get_method_class
from harness.train import distributed
from harness.train.lora import check_available

LAYOUT_FIELDS = ("train.grad_accum_steps",)


def runs_root(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("LADIR_RUNS", "runs"))


def default_run_name(config: RunConfig) -> str:
    return f"{config.method}-{config.task}-{config.preset}-seed{config.seed}"


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            out += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            out.append(f"{prefix}{key}")
    return out


def resolved_options(method_cls: type[Method], options: dict) -> dict:
    """Every method option with its value (defaults filled in), so a run's config.yaml says exactly how
    it was trained even after a default changes."""
    return dataclasses.asdict(build_dataclass(method_cls.Options, options, "method_options"))


def read_saved_config(path: Path) -> RunConfig:
    """A run's config.yaml as a RunConfig. Fields added to the code since it was written take their
    defaults, except method options whose default changed when they were added: those take the value
    that reproduces how the run was trained (`Options.BEFORE_ADDED`, the behaviour before the option
    existed)."""
    data = yaml.safe_load(path.read_text()) or {}
    if isinstance(data, dict) and isinstance(data.get("method_options"), dict) and "method" in data:
        before = getattr(get_method_class(str(data["method"])).Options, "BEFORE_ADDED", {})
        data["method_options"] = {**before, **data["method_options"]}
    return build_dataclass(RunConfig, data, "")


def create_run(config: RunConfig, name: str | None, root: Path, stage: str | None = None) -> tuple[Method, RunContext]:
    """A method bound to `runs/NAME`; an existing run must have the same config (then it resumes).
    `stage` (train --stage) is checked against the method's stages before anything is written."""
    method_cls = get_method_class(config.method)
    config.method = method_cls.name
    config.method_options = resolved_options(method_cls, config.method_options)  # validates them, too
    name = name or default_run_name(config)
    run_dir = root / name
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        saved = read_saved_config(config_path).to_dict()
        saved["method_options"] = resolved_options(method_cls, saved.get("method_options") or {})
        # the parallel layout may change between resumes (one process accumulating, or many): the update
        # is the same as long as processes x grad_accum_steps is
        changed = [key for key in _differences(saved, config.to_dict()) if key not in LAYOUT_FIELDS]
        if changed:
            raise BadInput(f"run {name!r} exists with a different config (differs in: {', '.join(changed)}); "
                           f"use another --run name or the same settings to resume")
    ctx = RunContext(config, run_dir, root)
    check_parallel_layout(config.train, distributed.world_size(), ctx.device.type)
    if config.train.lora_r:
        if method_cls.name != "ar-sft":
            raise BadInput(f"train.lora_r > 0 is implemented for ar-sft only, not {method_cls.name}")
        check_available()
    ctx.task  # noqa: B018  (validates the task name and task_options before anything is written)
    if not config.model.from_scratch:
        check_model_available(config.model.name)
    method = method_cls(ctx)
    method.check_stage(stage)  # the stages may follow the run's options (Coconut's max_stage)
    if distributed.is_main_process():  # every rank has the same config; one writes it
        config.save(config_path)
    return method, ctx


def not_trained(name: str, error: FileNotFoundError) -> BadInput:
    return BadInput(f"run {name!r} is not trained yet ({error}); run `ladir-bench train` first")


def open_run(name: str, root: Path, load: bool = True) -> tuple[Method, RunContext]:
    """A trained run, ready to sample (`load=False`: its weights not loaded, for an engine that loads
    them itself, e.g. vLLM, which a copy already on the GPU would crowd out)."""
    run_dir = root / name
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise BadInput(f"no run named {name!r} under {root} (expected {config_path})")
    config = read_saved_config(config_path)
    ctx = RunContext(config, run_dir, root)
    method = get_method_class(config.method)(ctx)
    if load:
        try:
            method.load()
        except FileNotFoundError as error:
            raise not_trained(name, error) from None
    return method, ctx
