"""`ladir-bench ablate`: a grid of training settings x a grid of sampling knobs, run and evaluated
one cell at a time. Every cell is a normal run directory and a normal evaluation folder, so a grid
interrupted anywhere resumes where it stopped, and `ladir-bench table` reads its results.

Grid file (YAML):

    name: noise-sweep            # run names: <name>-<cell>
    method: ladir
    task: countdown4
    preset: tiny
    settings: {train.steps: 600}                       # shared overrides (key=value as in --set)
    train_grid: {method_options.latent_noise: [0.0, 1.0, 3.0]}   # one run per combination
    eval: {k: 10, limit: 100, split: test}
    eval_grid: {steps: [5, 10, 30], gamma_max: [0.0, 0.3]}        # every run evaluated at each
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import build_dataclass, load_config, parse_override, read_yaml
from harness.errors import BadInput
from harness.progress import console


@dataclass
class EvalSpec:
    k: int = 10
    limit: int | None = None
    split: str = "test"


@dataclass
class Grid:
    name: str = "ablation"
    method: str = "ladir"
    task: str = "countdown4"
    preset: str = "tiny"
    settings: dict[str, Any] = field(default_factory=dict)
    train_grid: dict[str, Any] = field(default_factory=dict)
    eval: EvalSpec = field(default_factory=EvalSpec)
    eval_grid: dict[str, Any] = field(default_factory=dict)


def _product(grid: dict[str, Any], where: str) -> list[dict[str, Any]]:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BadInput(f"{where}.{key}: expected a non-empty list of values")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))] or [{}]


def _cell_name(prefix: str, cell: dict[str, Any]) -> str:
    parts = [f"{key.split('.')[-1]}{value}" for key, value in cell.items()]
    return "-".join([prefix, *parts]) if parts else prefix


def load_grid(path: Path) -> Grid:
    return build_dataclass(Grid, read_yaml(path), path.name)


def run_grid(path: Path, runs_root: Path) -> list[Path]:
    """Train every cell (resuming), then evaluate it at every sampling cell; returns metrics folders."""
    from harness.evaluate.run import evaluate_run
    from harness.runs import create_run, open_run

    grid = load_grid(path)
    train_cells = _product(grid.train_grid, "train_grid")
    eval_cells = _product(grid.eval_grid, "eval_grid")
    configs = []
    for cell in train_cells:  # validate every cell before training any
        overrides = [parse_override(f"{k}={v}") for k, v in {**grid.settings, **cell}.items()]
        overrides.append({"method": grid.method, "task": grid.task})
        configs.append((_cell_name(grid.name, cell), load_config(grid.preset, None, overrides)))
    results = []
    for index, (name, config) in enumerate(configs, start=1):
        console.print(f"[bold]ablate[/] cell {index}/{len(configs)}: {name}")
        method, ctx = create_run(config, name, runs_root)
        method.train()
        method, ctx = open_run(name, runs_root)
        for knobs in eval_cells:
            _, out_dir = evaluate_run(method, ctx, ctx.task, grid.eval.split, grid.eval.k, grid.eval.limit, dict(knobs))
            results.append(out_dir)
    return results
