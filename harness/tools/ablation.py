"""`ladir-bench ablate`: a grid of runs (methods x tasks x training settings) x a grid of sampling knobs,
trained and evaluated one cell at a time. Every cell is a normal run directory and a normal evaluation
folder, so a grid interrupted anywhere resumes where it stopped, and `ladir-bench table` reads its
results. `ladir-bench reproduce` (harness.tools.reproduce) plans the paper's tables with the same grids.

Grid file (YAML):

    name: noise-sweep            # run names: <name>-<cell>
    method: ladir                # the default of cells that do not name one
    task: countdown4
    preset: tiny
    settings: {train.steps: 600}                       # shared overrides (key=value as in --set)
    method_settings: {ladir: {method_options.vae_steps: 600}}  # overrides for one method's cells only
    method_config: {ladir: configs/ladir-paper.yaml}   # a config file layered over the preset for a method
    train_grid: {method_options.latent_noise: [0.0, 1.0, 3.0]}   # one run per combination
    eval: {k: 10, limit: 100, split: test}
    eval_grid: {steps: [5, 10, 30], gamma_max: [0.0, 0.3]}        # every run evaluated at each
    method_eval_grid: {mdm: {steps: [16, 32]}}         # a method's own sampling grid, instead of eval_grid
    # (an eval grid may be a list of mappings too: the union of their products, e.g. [{}, {steps: [1]}]
    # for the defaults and one other setting)

`train_grid` keys are `method`, `task`, `seed` or any `--set` key, so a grid ranges over methods and
tasks as well as knobs; a list of such mappings is the union of their products (one-knob-at-a-time
sweeps). `eval_tasks: [{task: math500, task_options: {data_file: ...}}]` evaluates every run on those
tasks instead of its own (a model trained on one data set, tested on several). `run_names: config`
names each run `<method>-<task>-seed<seed>-<hash of its resolved config>` instead of `<name>-<cell>`,
so two grids asking for the same run find the same directory and train it once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import sleep, time
from typing import Any

from harness.config import PRESET_DIR, RunConfig, build_dataclass, load_config, parse_override, read_yaml
from harness.errors import BadInput, InUse
from harness.progress import console

RUN_NAMINGS = ("cell", "config")


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
    method_settings: dict[str, Any] = field(default_factory=dict)
    method_config: dict[str, Any] = field(default_factory=dict)
    train_grid: Any = field(default_factory=dict)  # a mapping of value lists, or a list of them (their union)
    eval: EvalSpec = field(default_factory=EvalSpec)
    eval_grid: dict[str, Any] | list[dict[str, Any]] = field(default_factory=dict)
    method_eval_grid: dict[str, Any] = field(default_factory=dict)
    eval_tasks: list[dict] = field(default_factory=list)
    run_names: str = "cell"


@dataclass
class PlannedEval:
    """One evaluation of a run: on `task` (with its options) at the sampling knobs `knobs`."""

    task: str
    task_options: dict[str, Any]
    knobs: dict[str, Any]


@dataclass
class PlannedRun:
    """One training run of a grid: its directory name, resolved config, the train-grid values that made
    it (`cell`, including its method, task and seed) and its evaluations."""

    name: str
    config: RunConfig
    cell: dict[str, Any]
    evals: list[PlannedEval]


@dataclass
class Evaluation:
    """A finished evaluation: which run, which setting, and its results folder."""

    run: PlannedRun
    eval: PlannedEval
    folder: Path


def _product(grid: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if not isinstance(grid, dict):
        raise BadInput(f"{where}: expected a mapping of option -> list of values, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BadInput(f"{where}.{key}: expected a non-empty list of values")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))] or [{}]


def union_of_products(grid: dict[str, Any] | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """The points of a grid in order: the product of a mapping, or the union of a list's products (a
    point listed twice is kept once). Train grids give the runs' cells, eval grids the sampling settings."""
    if isinstance(grid, list) and not grid:
        raise BadInput(f"{where}: an empty list has no points (a mapping {{}} is the defaults' one point)")
    parts = grid if isinstance(grid, list) else [grid]
    points: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        points += [point for point in _product(part, f"{where}[{index}]" if isinstance(grid, list) else where)
                   if point not in points]
    return points


def _cell_name(prefix: str, cell: dict[str, Any]) -> str:
    parts = []
    for key, value in cell.items():
        if key in ("method", "task"):
            parts.append(str(value))
        else:
            parts.append(f"{key.split('.')[-1]}{value}")
    return "-".join([prefix, *parts]) if parts else prefix


def config_run_name(config: RunConfig) -> str:
    """`<method>-<task>-seed<seed>-<hash>`: the same resolved config always gets the same name, so every
    grid that needs this run finds it (the parallel layout, free to change between resumes, is left out)."""
    from harness.runs import LAYOUT_FIELDS

    data = config.to_dict()
    for dotted in LAYOUT_FIELDS:
        section, _, key = dotted.partition(".")
        data.get(section, {}).pop(key, None)
    digest = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{config.method}-{config.task}-seed{config.seed}-{digest}"


def _config_file(value: Any, method: str) -> Path:
    path = Path(str(value))
    if not path.is_file() and (PRESET_DIR / path).is_file():
        path = PRESET_DIR / path
    if not path.is_file():
        raise BadInput(f"method_config.{method}: file not found: {value}")
    return path


def _resolved(config: RunConfig) -> RunConfig:
    """The config as create_run will save it: canonical method name, every method option filled in
    (validated, so a bad cell is refused before any cell trains)."""
    from harness.methods import get_method_class
    from harness.runs import resolved_options

    method_cls = get_method_class(config.method)
    config.method = method_cls.name
    config.method_options = resolved_options(method_cls, config.method_options)
    return config


def _eval_tasks(grid: Grid, config: RunConfig) -> list[tuple[str, dict[str, Any]]]:
    if not grid.eval_tasks:
        return [(config.task, dict(config.task_options))]
    targets = []
    for index, entry in enumerate(grid.eval_tasks):
        if not isinstance(entry, dict) or "task" not in entry or set(entry) - {"task", "task_options"}:
            raise BadInput(f"eval_tasks[{index}]: expected {{task: NAME, task_options: {{...}}}}, got {entry!r}")
        targets.append((str(entry["task"]), dict(entry.get("task_options") or {})))
    return targets


def plan_grid(grid: Grid) -> list[PlannedRun]:
    """Every run of the grid with its resolved config and evaluations, all validated before any trains."""
    if grid.run_names not in RUN_NAMINGS:
        raise BadInput(f"run_names must be one of {', '.join(RUN_NAMINGS)}, got {grid.run_names!r}")
    plans: dict[str, PlannedRun] = {}
    for cell in union_of_products(grid.train_grid, "train_grid"):
        method = str(cell.get("method", grid.method))
        method_settings = grid.method_settings.get(method) or {}
        if not isinstance(method_settings, dict):
            raise BadInput(f"method_settings.{method}: expected a mapping of key -> value")
        overrides = [{"method": method, "task": grid.task}]
        overrides += [parse_override(f"{k}={v}") for k, v in {**grid.settings, **method_settings, **cell}.items()]
        config_file = _config_file(grid.method_config[method], method) if method in grid.method_config else None
        config = _resolved(load_config(grid.preset, config_file, overrides))
        name = _cell_name(grid.name, cell) if grid.run_names == "cell" else config_run_name(config)
        knob_grid = grid.method_eval_grid.get(config.method, grid.method_eval_grid.get(method, grid.eval_grid))
        evals = [PlannedEval(task, options, knobs) for task, options in _eval_tasks(grid, config)
                 for knobs in union_of_products(knob_grid, "eval_grid")]
        full_cell = {"method": config.method, "task": config.task, "seed": config.seed, **cell}
        if name in plans:  # the same run asked for twice (one-knob sweeps share their default run)
            plans[name].evals += [e for e in evals if e not in plans[name].evals]
        else:
            plans[name] = PlannedRun(name, config, full_cell, evals)
    return list(plans.values())


def load_grid(path: Path) -> Grid:
    return build_dataclass(Grid, read_yaml(path), path.name)


# A run folder remade from a table's committed copies (`reproduce`'s `restore_runs`): its config and its
# evaluations (samples included), no weights. The file names where each evaluation was copied from.
RESTORED = "restored.json"


def _sampled_checkpoint(config: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """What a planned evaluation's `checkpoint` record must say: the final checkpoint of the run's last
    phase once that phase is done (phase and step), its phase alone for a run without weights (a
    restored run, or one not made yet: its copies were evaluated after training), None for a run still
    training, whose evaluations (e.g. an `eval` of its stage-1 weights) are not the planned ones."""
    from harness.context import RunContext
    from harness.methods import get_method_class
    from harness.train.checkpoint import final_checkpoint, phase_done

    stages = get_method_class(config.method)(RunContext(config, run_dir, run_dir.parent)).stages
    if not stages:
        return {}
    last = stages[-1]
    if not run_dir.is_dir() or (run_dir / RESTORED).is_file():
        return {"phase": last}
    if not phase_done(run_dir / last):
        return None
    try:
        return {"phase": last, "step": final_checkpoint(run_dir / last)[0]}
    except FileNotFoundError:  # its weights removed (or the folder copied without them): the phase alone
        return {"phase": last}


@functools.lru_cache(maxsize=64)
def _problems_hash(task: str, options: str, seed: int, split: str, limit: int | None) -> str:
    """The hash a manifest records of the first `limit` problems of `split` (`options`: the task's
    options as JSON), loaded once per process however many evaluations are matched against it."""
    from harness.evaluate.provenance import problems_sha256
    from tasks import get_task

    return problems_sha256(get_task(task, seed=seed, **json.loads(options)).problems(split)[:limit])


def resolved_knobs(config: RunConfig, planned: PlannedEval) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the method's default sampling knobs, every knob as `evaluate_run` resolves it for `planned`: the
    defaults, the run's eval settings, the planned knobs), with no method built."""
    from harness.evaluate.run import config_knobs
    from harness.methods import get_method_class

    knobs_class = get_method_class(config.method).SampleKnobs
    defaults = asdict(knobs_class())
    return defaults, {**defaults, **config_knobs(knobs_class, config), **planned.knobs}


def sampled_at(knobs: dict[str, Any], defaults: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether an evaluation that recorded `knobs` sampled at `expected` (a knob newer than the
    evaluation, so not recorded, reads as its default)."""
    return all(knobs.get(name, defaults.get(name)) == value for name, value in expected.items())


def evaluation_matcher(config: RunConfig, run_dir: Path, planned: PlannedEval, eval_spec: EvalSpec,
                       exact_limit: bool = False) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    """Whether an evaluation (its metrics.json and manifest.json) is `planned` for the run of `config` at
    `run_dir`: its task, the grid's k, split and limit (exactly, with `exact_limit`: an evaluation that is
    not redone must score the planned problems, no more), the same problems (their hash, so the grid's
    data files, not only the task's name), the run's own seed, this process's engine, the run's final
    weights (`_sampled_checkpoint`), and every sampling knob as `evaluate_run` resolves it (the method's
    defaults, the run's eval settings, the planned knobs; a knob newer than the evaluation reads as its
    default). A manifest older than the problems' hash matches on the rest."""
    defaults, expected = resolved_knobs(config, planned)
    checkpoint = _sampled_checkpoint(config, run_dir)
    options = json.dumps(planned.task_options, sort_keys=True)

    def same_problems(manifest: dict[str, Any]) -> bool:
        return ("problems_sha256" not in manifest or manifest["problems_sha256"]
                == _problems_hash(planned.task, options, config.seed, eval_spec.split, manifest.get("limit")))

    def matches(metrics: dict[str, Any], manifest: dict[str, Any]) -> bool:
        knobs = metrics.get("knobs") or {}
        problems = metrics.get("n_problems", 0)
        sampled = metrics.get("checkpoint") or {}
        return (checkpoint is not None and all(sampled.get(key) == value for key, value in checkpoint.items())
                and metrics.get("task") == planned.task and metrics.get("k") == eval_spec.k
                and metrics.get("split") == eval_spec.split and metrics.get("seed") == config.seed
                and "engine" not in metrics  # only another engine than the method's own records one
                and sampled_at(knobs, defaults, expected)
                and (eval_spec.limit is None
                     or (problems == eval_spec.limit if exact_limit else problems >= eval_spec.limit))
                and same_problems(manifest))

    return matches


def finished_evaluations(run_dir: Path, config: RunConfig, planned: PlannedEval, eval_spec: EvalSpec,
                         exact_limit: bool = False) -> list[Path]:
    """The results folders of `run_dir` (a run of `config`) that hold `planned` (`evaluation_matcher`)."""
    matches = evaluation_matcher(config, run_dir, planned, eval_spec, exact_limit)
    found = []
    for path in sorted(run_dir.glob("results/*/*/metrics.json")):
        manifest = path.with_name("manifest.json")
        if matches(json.loads(path.read_text()), json.loads(manifest.read_text()) if manifest.is_file() else {}):
            found.append(path.parent)
    return found


def restored_in_full(plan: PlannedRun, runs_root: Path, eval_spec: EvalSpec) -> list[Path] | None:
    """A restored run's folder for each planned evaluation, when it holds each exactly once (at exactly
    the planned limit: a restored evaluation is not redone); None if the run is not restored or lacks one."""
    run_dir = runs_root / plan.name
    if not (run_dir / RESTORED).is_file():
        return None
    found = [finished_evaluations(run_dir, plan.config, planned, eval_spec, exact_limit=True) for planned in plan.evals]
    return [folders[0] for folders in found] if all(len(folders) == 1 for folders in found) else None


# A folder set aside or staged (`.retrain-*`, `.restore-*`, ...) older than this was left by a process
# killed mid-way (each takes seconds to minutes): the next one made beside it removes it. An age, not a
# pid, so that a runs folder shared by several machines never loses another machine's folder in use.
ABANDONED_AFTER_S = 24 * 3600


def remove_abandoned(parent: Path, prefix: str) -> None:
    for old in parent.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            if time() - old.stat().st_mtime > ABANDONED_AFTER_S:
                shutil.rmtree(old, ignore_errors=True)


def _restored_evaluations(plan: PlannedRun, runs_root: Path, eval_spec: EvalSpec) -> list[Evaluation] | None:
    """A restored run's planned evaluations, when it holds them all; None where the run must train. A
    restored run that lacks one has no weights to sample it with: its folder (copies only, the table
    they came from keeps them) is set aside and removed, and the run is trained from the start."""
    run_dir = runs_root / plan.name
    marker = run_dir / RESTORED
    if not marker.is_file():
        return None
    folders = restored_in_full(plan, runs_root, eval_spec)
    if folders is None:
        console.print(f"{plan.name}: restored without weights, and the grid asks for evaluations it does not "
                      "hold: retrained from the start")
        remove_abandoned(runs_root, ".retrain-")
        aside = run_dir.with_name(f".retrain-{plan.name}-{os.getpid()}")
        # renamed first, so a second process finds no restored folder to remove (nor a run begun since)
        with contextlib.suppress(FileNotFoundError):
            os.replace(run_dir, aside)
            shutil.rmtree(aside)
        return None
    sources = sorted(set((json.loads(marker.read_text()).get("evaluations") or {}).values()))
    console.print(f"{plan.name}: evaluated by an earlier call, restored from {', '.join(sources)}; not retrained")
    return [Evaluation(plan, planned, folder) for planned, folder in zip(plan.evals, folders, strict=True)]


def _train_and_evaluate(plan: PlannedRun, runs_root: Path, eval_spec: EvalSpec) -> list[Evaluation]:
    """Train the run (resuming), then evaluate it at each of its settings (resuming); a restored run
    that holds every planned evaluation is not retrained."""
    from harness.evaluate.run import evaluate_run
    from harness.runs import create_run, open_run
    from tasks import get_task

    restored = _restored_evaluations(plan, runs_root, eval_spec)
    if restored is not None:
        return restored
    method, ctx = create_run(plan.config, plan.name, runs_root)
    method.train()
    method, ctx = open_run(plan.name, runs_root)
    results = []
    for planned in plan.evals:
        own = planned.task == ctx.config.task and planned.task_options == ctx.config.task_options
        task = ctx.task if own else get_task(planned.task, seed=ctx.seed, **planned.task_options)
        _, out_dir = evaluate_run(method, ctx, task, eval_spec.split, eval_spec.k, eval_spec.limit,
                                  dict(planned.knobs))
        results.append(Evaluation(plan, planned, out_dir))
    return results


def planned_method(plan: PlannedRun, runs_root: Path):
    """The run's method on its planned config and folder, nothing trained or loaded: what it would train
    (its stages, the phases it shares) before it starts."""
    from harness.context import RunContext
    from harness.methods import get_method_class

    return get_method_class(plan.config.method)(RunContext(plan.config, runs_root / plan.name, runs_root))


def _shared_phases(plan: PlannedRun, runs_root: Path) -> set[Path]:
    """The folders of the phases this run would adopt from another run with the same settings (LaDiR's
    VAE), unfinished ones only: while another process trains one in its own run, this run must wait too."""
    from harness.train.checkpoint import phase_done

    return {folder for folder, _ in planned_method(plan, runs_root).shared_phases().values() if not phase_done(folder)}


def _refuse_held(plan: PlannedRun, runs_root: Path) -> None:
    """InUse when another process is training one of this run's phases, raised before the run's setup
    (LaDiR encodes its oracle blocks, minutes of work, before it reaches a phase's lock), so a grid
    moves on from a held run at once."""
    from harness.locks import holder

    run_dir = runs_root / plan.name
    if not run_dir.is_dir():
        return
    for stage in planned_method(plan, runs_root).stages:
        if pid := holder(run_dir / stage):
            raise InUse(f"training phase '{stage}' {run_dir / stage} is in use by another process (pid {pid})",
                        run_dir / stage)


def run_plan(plans: list[PlannedRun], runs_root: Path, eval_spec: EvalSpec,
             poll_seconds: float = 60.0) -> list[Evaluation]:
    """Train and evaluate every run, in the plan's order. A run that another process holds (a second
    `reproduce` or `ablate` of the same grid on the same runs folder, as a job array would start them) is
    left to it, as is a run whose shared base LM another process is training or that would adopt a phase
    a held run is training (LaDiR's shared VAE), and come back to once every other run is done, waiting
    for it to be free: N processes on one grid split its runs between them, and each ends with all of
    them done. Within a multi-process launch nothing is left: its processes must train the same run."""
    from harness.locks import holder, moving_on_from_shared
    from harness.train import distributed

    done: dict[int, list[Evaluation]] = {}
    held: list[int] = []
    in_flight: set[Path] = set()  # shared phases a held run may be training
    alone = distributed.world_size() == 1
    for index, plan in enumerate(plans):
        console.print(f"[bold]grid[/] run {index + 1}/{len(plans)}: {plan.name}")
        if in_flight and _shared_phases(plan, runs_root) & in_flight:
            console.print("a run left to another process trains the phase this one shares: back to it at the end")
            held.append(index)
            continue
        try:
            with moving_on_from_shared(alone):
                if alone:  # the ranks of one launch train the same run together: none is held from the others
                    _refuse_held(plan, runs_root)
                done[index] = _train_and_evaluate(plan, runs_root, eval_spec)
        except InUse as busy:
            if not alone:
                raise
            console.print(f"{busy}; on to the next run, back to this one at the end")
            held.append(index)
            in_flight |= _shared_phases(plan, runs_root)
    for index in held:
        console.print(f"[bold]grid[/] back to run {index + 1}/{len(plans)}: {plans[index].name}")
        while index not in done:
            try:
                _refuse_held(plans[index], runs_root)
                done[index] = _train_and_evaluate(plans[index], runs_root, eval_spec)
            except InUse as busy:
                console.print(f"waiting for process {holder(busy.directory)}, which holds {busy.directory}")
                while holder(busy.directory):  # whatever the holder finished returns at once on the next try
                    sleep(poll_seconds)
    return [evaluation for index in sorted(done) for evaluation in done[index]]


def run_grid(path: Path, runs_root: Path) -> list[Path]:
    """Train every cell (resuming), then evaluate it at every sampling cell; returns metrics folders."""
    grid = load_grid(path)
    return [evaluation.folder for evaluation in run_plan(plan_grid(grid), runs_root, grid.eval)]
