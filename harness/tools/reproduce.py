"""`ladir-bench reproduce TABLE --scale S`: one of the paper's tables or figures, regenerated from the
grid shipped for it (`harness/presets/grids/TABLE.yaml`) at one of the scales of
`harness/presets/grids/scales.yaml`, and printed in the paper's layout beside the paper's own figures.

A table file names the runs (a `harness.tools.ablation` grid over methods, tasks and knobs) and the
layout (which run fields make the rows and columns, which metrics, the paper's figures per row); a
scale gives every table the same model, budgets and evaluation, so a run is resolved to the same config
whichever table asks for it, and is named after that config (`<method>-<task>-seed<seed>-<hash>`):
`reproduce step-scaling` finds the LaDiR run `reproduce countdown` trained, and evaluates it at more
step counts. Training and evaluation resume (harness.runs, harness.evaluate.run), so a second call
trains and samples nothing and prints the same table.

Each cell is the mean over test problems (and training seeds) with its 95% bootstrap interval, and,
beside the baseline row (AR-SFT where the table has it), the paired bootstrap difference on the same
problems (harness.evaluate.stats). `--dry-run` prints the plan, what is already done and the compute left.

The output folder carries each cell's evaluation (metrics, manifest, every checked sample) and its run's
config, so it is a table's whole record without the runs folder: a later call with the same `--out`
on a runs folder that lacks those runs restores their evaluations from it instead of retraining them
(`restore_runs`), so a committed table is rebuilt, or given another seed, by training only what it
lacks.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import itertools
import json
import os
import re
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import PRESET_DIR, _deep_merge, build_dataclass, read_yaml
from harness.errors import BadInput
from harness.jsonl import atomic_open, chmod_as_created, write_json_atomic
from harness.progress import console
from harness.tools.ablation import (
    RESTORED,
    EvalSpec,
    Evaluation,
    Grid,
    PlannedRun,
    evaluation_matcher,
    finished_evaluations,
    plan_grid,
    planned_method,
    remove_abandoned,
    resolved_knobs,
    restored_in_full,
    run_plan,
    sampled_at,
)

GRID_DIR = PRESET_DIR / "grids"
FORMATS = {"markdown": "md", "latex": "tex", "csv": "csv"}
# --precision: fp32 trains as the committed reference tables were trained; bf16 under autocast, float32 master weights
PRECISIONS = ("fp32", "bf16")
_DATA_REF = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
# (digits, scale) of a metric in a cell where it is not stats.display_format's (rates in percent, counts as they are)
METRIC_FORMAT = {"samples_per_s": (1, 1.0)}
METRIC_LABELS = {"diversity": "Div.", "samples_per_s": "samples/s", "uses_given_numbers": "uses given numbers",
                 "step_figures.arithmetic_valid": "own steps exact", "reconstruction_ceiling": "AE ceiling"}
# read from metrics.json (no interval), not from the samples; a dotted name is a nested figure
TABLE_METRICS = ("samples_per_s", "step_figures.arithmetic_valid", "reconstruction_ceiling")


def recorded(metrics: dict, name: str) -> Any:
    """A figure of metrics.json by name, `a.b` for metrics["a"]["b"]; None where it has none."""
    for part in name.split("."):
        metrics = metrics.get(part) if isinstance(metrics, dict) else None
    return metrics


# ------------------------------------------------------------------------------------------ the specs
@dataclass
class Scale:
    """Shared by every table at this scale, so the same run resolves to the same config in all of them."""

    about: str = ""
    preset: str = "tiny"
    settings: dict[str, Any] = field(default_factory=dict)
    method_settings: dict[str, Any] = field(default_factory=dict)
    method_config: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    seeds: int = 1
    # at least this many training seeds for these methods (the headline rows), unless --seeds says otherwise
    method_seeds: dict[str, int] = field(default_factory=dict)
    needs_gpu: bool = False  # documentation of a GPU setting: --dry-run only on a machine without one
    # Fallback estimates for --dry-run where no finished run of the same shape has been measured yet
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    seconds_per_sample: dict[str, float] = field(default_factory=dict)
    estimates: str = ""  # how those were measured
    # --precision bf16: each method's training step time under bf16 autocast is its fp32 one over this
    bf16_train_speedup: dict[str, float] = field(default_factory=dict)


@dataclass
class Layout:
    """The paper's layout: run fields that make the rows (one column each) and the column groups,
    the metrics in each group, the baseline row of the paired comparison, labels and the paper's figures."""

    rows: list[str] = field(default_factory=lambda: ["method"])
    columns: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["pass@1", "pass@k", "diversity"])
    diagnostics: list[str] = field(default_factory=list)  # a second table, same rows (e.g. chain_valid@1)
    baseline: Any = None  # {field: value}, or "defaults" (the run and sampling no grid knob changed)
    headers: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)  # field -> {value: label, "*": "... {value} ..."}
    reference: list[dict] = field(default_factory=list)  # [{when: {field: value}, text: ...}], first match
    notes: list[str] = field(default_factory=list)


@dataclass
class TableSpec:
    title: str = ""
    paper: str = ""  # which of the paper's tables the reference column quotes
    grid: dict[str, Any] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)
    plots: list[str] = field(default_factory=list)  # `harness.evaluate.report.plot` kinds
    data_files: dict[str, str] = field(default_factory=dict)  # name -> what the file must hold
    # tasks `--tasks` may run the table on instead of (or beside) its own: an ablation measured where
    # another task puts the comparison (e.g. Countdown-3, where AR-SFT's own steps are mostly valid)
    other_tasks: list[str] = field(default_factory=list)
    scales: dict[str, Any] = field(default_factory=dict)  # scale -> grid overrides for this table


def table_names() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.yaml") if p.stem != "scales")


def load_table(name: str) -> TableSpec:
    if name not in table_names():
        raise BadInput(f"unknown table {name!r} (known: {', '.join(table_names())})")
    path = GRID_DIR / f"{name}.yaml"
    return build_dataclass(TableSpec, read_yaml(path), path.name)


def load_scale(name: str) -> Scale:
    scales = read_yaml(GRID_DIR / "scales.yaml")
    if name not in scales:
        raise BadInput(f"unknown scale {name!r} (known: {', '.join(scales)})")
    return build_dataclass(Scale, scales[name], f"scales.yaml:{name}")


# ------------------------------------------------------------------------------------------ the grid
def _substitute(value: Any, files: dict[str, str]) -> Any:
    """`${name}` in any string of the grid -> the data file given as --data name=PATH."""
    if isinstance(value, str):
        return _DATA_REF.sub(lambda match: files.get(match.group(1), match.group(0)), value)
    if isinstance(value, dict):
        return {key: _substitute(item, files) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, files) for item in value]
    return value


def missing_data(spec: TableSpec, table: str, files: dict[str, str]) -> str | None:
    """The one-line refusal naming the data files a table needs and did not get, or None."""
    missing = [name for name in spec.data_files if name not in files]
    if not missing:
        for name in spec.data_files:
            if not Path(files[name]).expanduser().is_file():
                return f"reproduce {table}: data file {name}={files[name]} not found"
        return None
    needed = "; ".join(f"--data {name}=PATH ({spec.data_files[name]})" for name in missing)
    return f"reproduce {table} needs the user's data files, not given: {needed}"


def _filtered(parts: list[dict], key: str, wanted: list[str] | None, table: str,
              others: list[str] = ()) -> list[dict]:
    """The train grid's parts restricted to the `wanted` values of `key`; wanted values in `others` (the
    table's `other_tasks`) join every part."""
    if not wanted:
        return parts
    known = {value for part in parts for value in part.get(key, [])}
    unknown = [value for value in wanted if value not in known and value not in others]
    if unknown:
        allowed = ", ".join(sorted(known | set(others)))
        raise BadInput(f"table {table} has no {key} {', '.join(unknown)} (its {key}s: {allowed})")
    kept = []
    for part in parts:
        own = part.get(key, [])
        values = [value for value in own if value in wanted] + [value for value in wanted
                                                                if value in others and value not in own]
        if values:
            kept.append({**part, key: values})
    return kept


def _selected_knobs(data: dict[str, Any], knobs: dict[str, list[str]], table: str) -> None:
    """The sampling grids of the planned methods restricted, in place, to the points that set each knob
    of `knobs` (`KNOB` for every method's grid, `METHOD.KNOB` for one method's) to one of its values
    (`steps=8` selects the grid's 8; numbers compare as numbers, booleans in any case). A point that
    leaves the knob unset samples at the method's default and is selected by that value
    (`mdm.threshold=0` selects the countdown grid's LLaDA decoder); a knob, method or value the grids
    do not have is refused, as is a method left with no point."""
    from harness.methods import get_method_class
    from harness.tools.ablation import union_of_products

    def default(method: str, knob: str) -> Any:
        return getattr(get_method_class(method).SampleKnobs(), knob, None)

    def same(value: Any, given: str) -> bool:
        if isinstance(value, bool):
            return given.lower() == str(value).lower()
        with contextlib.suppress(TypeError, ValueError):
            return float(value) == float(given)
        return str(value) == given

    planned = list(dict.fromkeys(method for part in data["train_grid"]
                                 for method in part.get("method", [data.get("method", Grid.method)])))
    own = data.get("method_eval_grid") or {}
    # each planned method's points, its own grid's or the shared eval_grid's
    points = {method: union_of_products(own.get(method, data.get("eval_grid") or {}), "eval_grid")
              for method in planned}
    for name, values in knobs.items():
        scope, _, knob = name.rpartition(".")
        given = f"--knob {name}={','.join(values)}"
        if scope and scope not in planned:
            raise BadInput(f"{given}: table {table} samples no method {scope} here "
                           f"(its methods: {', '.join(planned)})")
        targets = [scope] if scope else [m for m in planned if any(knob in point for point in points[m])]
        if not any(knob in point for m in targets for point in points[m]):
            known = sorted({key for m in ([scope] if scope else planned) for point in points[m] for key in point})
            raise BadInput(f"{given}: table {table}'s sampling grid sets no {knob} "
                           f"(it sets: {', '.join(known) or 'nothing, the defaults only'})")
        grid_values = list(dict.fromkeys(point.get(knob, default(m, knob)) for m in targets for point in points[m]))
        unknown = [value for value in values if not any(same(v, value) for v in grid_values)]
        if unknown:
            raise BadInput(f"{given}: table {table} has no {knob} {', '.join(unknown)} "
                           f"(its values: {', '.join(map(str, grid_values))})")
        for method in targets:
            points[method] = [point for point in points[method]
                              if any(same(point.get(knob, default(method, knob)), value) for value in values)]
            if not points[method]:
                raise BadInput(f"{given} leaves {method} no sampling setting: select the other methods "
                               f"with --methods, or scope the knob (METHOD.{knob})")
    data["method_eval_grid"] = {method: [{key: [value] for key, value in point.items()} for point in chosen]
                                for method, chosen in points.items()}


def resolve_grid(table: str, spec: TableSpec, scale_name: str, scale: Scale, seeds: int,
                 files: dict[str, str], methods: list[str] | None = None, tasks: list[str] | None = None,
                 overrides: dict[str, Any] | None = None, method_seeds: dict[str, int] | None = None,
                 knobs: dict[str, list[str]] | None = None) -> Grid:
    """The table's grid at this scale: the scale's shared settings, then the table's grid, then the
    table's own settings for this scale, then `overrides` (the demo's budget options); the
    train grid restricted to `methods` / `tasks` and crossed with seeds 0..seeds-1, or as many as
    `method_seeds` gives the methods it names; the sampling grids restricted to `knobs`' values."""
    data: dict[str, Any] = {"name": table, "preset": scale.preset, "settings": scale.settings,
                            "method_settings": scale.method_settings, "method_config": scale.method_config,
                            "eval": scale.eval, "run_names": "config"}
    for layer in (spec.grid, spec.scales.get(scale_name) or {}, overrides or {}):
        data = _deep_merge(data, copy.deepcopy(layer))
    parts = data.get("train_grid") or {}
    parts = copy.deepcopy(parts if isinstance(parts, list) else [parts])
    parts = _filtered(parts, "method", methods, table)
    parts = _filtered(parts, "task", tasks, table, spec.other_tasks)
    seeded = []
    counts = method_seeds or {}
    for part in parts:
        if "seed" in part or not part.get("method"):
            seeded.append(part)
            continue
        # consecutive methods with the same seed count share a part, so the runs (and the table's rows)
        # keep the grid's method order
        for count, methods in itertools.groupby(part["method"], key=lambda m: counts.get(m, seeds)):
            seeded.append({**part, "method": list(methods), "seed": list(range(count))})
    for part in seeded:
        part.setdefault("seed", list(range(seeds)))
    data["train_grid"] = seeded
    if knobs:
        _selected_knobs(data, knobs, table)
    return build_dataclass(Grid, _substitute(data, files), f"{table}.yaml at scale {scale_name}")


# ------------------------------------------------------------------------------------------ dry run
def _steps_planned(plan: PlannedRun) -> int:
    """Optimizer steps the run trains: the shared fine-tuning budget, plus a method's own autoencoder
    budget (LaDiR's VAE, LD4LG's autoencoder: `vae_steps`); the shared base LM is counted apart."""
    return plan.config.train.steps + int(plan.config.method_options.get("vae_steps", 0) or 0)


def _phase_steps(phase_dir: Path) -> int:
    """Steps a phase has saved: all of a finished one, else its latest checkpoint's."""
    from harness.train.checkpoint import DONE_MARKER, checkpoints

    marker = phase_dir / DONE_MARKER
    if marker.is_file():
        return int(json.loads(marker.read_text()).get("steps", 0))
    found = checkpoints(phase_dir) if phase_dir.is_dir() else []
    return found[-1][0] if found else 0


def _steps_done(run_dir: Path) -> int:
    """Steps the run's phases have saved."""
    return sum(_phase_steps(p) for p in run_dir.iterdir() if p.is_dir()) if run_dir.is_dir() else 0


def _shape(config: dict[str, Any]) -> tuple:
    """What a step's cost depends on, for matching a planned run to measured ones."""
    model, train = config.get("model", {}), config.get("train", {})
    return (config.get("method"), model.get("name"), model.get("hidden_size"), model.get("num_layers"),
            model.get("intermediate_size"), train.get("batch_size"), train.get("mixed_precision", "no"))


def phase_seconds(phase_dir: Path, record: dict) -> float | None:
    """Wall seconds a finished phase's steps take at their typical rate: the median of the seconds per
    step between consecutive records of its training log, times its steps. A median, because a phase
    that was stopped, paused or resumed (across sessions, beside other jobs) counts those gaps in its
    elapsed time; the DONE marker's elapsed_s where the log has too few records."""
    import statistics

    from harness.jsonl import read_jsonl

    steps = record.get("steps") or 0
    log = phase_dir / "log.jsonl"
    timed = [(r["step"], r["elapsed_s"]) for r in read_jsonl(log) if "elapsed_s" in r and "step" in r] \
        if log.is_file() else []
    rates = [(t1 - t0) / (s1 - s0)
             for (s0, t0), (s1, t1) in zip(timed, timed[1:], strict=False) if s1 > s0 and t1 >= t0]
    if len(rates) >= 3:
        return statistics.median(rates) * steps
    return (record.get("last") or {}).get("elapsed_s")


def _stages(run_dir: Path) -> tuple[str, ...]:
    """The phases a run trains (its method's stages), () for a folder that is not a readable run."""
    from harness.runs import open_run

    try:
        return tuple(open_run(run_dir.name, run_dir.parent, load=False)[0].stages)
    except (BadInput, ValueError, TypeError, KeyError):
        return ()


@dataclass
class MeasuredSampling:
    """A finished evaluation's wall time: its run's shape, the knobs it sampled at, seconds and samples."""

    shape: tuple
    knobs: dict[str, Any]
    seconds: float
    samples: int


def measured_rates(runs_root: Path) -> tuple[dict[tuple, list[float]], list[MeasuredSampling]]:
    """(seconds per training step per run shape under `runs_root`, as [total seconds, total steps]; every
    finished evaluation's sampling time): from runs whose every phase is finished (`phase_seconds`; a run
    halfway through phases of unequal cost would misstate its method's rate) and from the evaluations'
    metrics.json (samples_per_s, and the knobs: a knob can change the cost several times over)."""
    import yaml

    from harness.train.checkpoint import DONE_MARKER

    train: dict[tuple, list[float]] = {}
    sampling: list[MeasuredSampling] = []
    for config_path in runs_root.glob("[!.]*/config.yaml") if runs_root.is_dir() else []:  # not a restore's staging
        try:
            config = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError:
            continue
        shape = _shape(config)
        phases = [config_path.parent / stage for stage in _stages(config_path.parent)]
        if phases and all((folder / DONE_MARKER).is_file() for folder in phases):
            records = {folder: json.loads((folder / DONE_MARKER).read_text()) for folder in phases}
            seconds = [phase_seconds(folder, record) for folder, record in records.items()]
            steps = sum(record.get("steps") or 0 for record in records.values())
            if steps and all(seconds):
                total = train.setdefault(shape, [0.0, 0.0])
                total[0], total[1] = total[0] + sum(seconds), total[1] + steps
        for metrics_path in config_path.parent.glob("results/*/*/metrics.json"):
            metrics = json.loads(metrics_path.read_text())
            if metrics.get("samples_per_s") and metrics.get("n_samples"):
                sampling.append(MeasuredSampling(shape, metrics.get("knobs") or {},
                                                 metrics["n_samples"] / metrics["samples_per_s"], metrics["n_samples"]))
    return train, sampling


def sampling_rate(shape: tuple, defaults: dict[str, Any], expected: dict[str, Any], measured: list[MeasuredSampling],
                  fallback: dict[str, float]) -> tuple[float | None, str]:
    """Seconds per sample of an evaluation still to run, and where the figure comes from: finished
    evaluations here of the same model shape at the same knobs, else at other knobs (the method's cost at
    some setting), else the scale's estimate for the method (measured at its default knobs)."""
    same_shape = [m for m in measured if m.shape == shape]
    for found, source in (([m for m in same_shape if sampled_at(m.knobs, defaults, expected)], "wall, from "
                           "finished evaluations here at these knobs"),
                          (same_shape, "wall, from finished evaluations here at other knobs")):
        if found:
            return sum(m.seconds for m in found) / sum(m.samples for m in found), source
    if shape[0] in fallback:
        return float(fallback[shape[0]]), "scale estimate, at the method's default knobs"
    return None, ""


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def describe_plan(table: str, scale_name: str, scale: Scale, grid: Grid, plans: list[PlannedRun],
                  runs_root: Path, missing: str | None, restorable: dict[str, list[Path]] | None = None) -> str:
    """The plan as text: every run with its training and evaluation state, then the compute left. A run
    restored from an earlier call's copies (`restorable`: to be restored now) counts as done: it is not
    retrained."""
    restorable = restorable or {}
    from harness.backbone import SCRATCH
    from harness.locks import holder
    from harness.train.checkpoint import phase_done

    measured_train, measured_sampling = measured_rates(runs_root)
    rows, bases, left_steps, left_samples = [], {}, {}, {}
    done_runs = done_evals = n_evals = 0
    whole_splits_left = 0  # evaluations of a whole test split (no limit): its size is not loaded here
    # A phase runs share (a LaDiR VAE) is trained by one of them: the run already training it in its own
    # folder, else the first planned; the others adopt it (`Method.shared_phases`).
    methods = [planned_method(plan, runs_root) for plan in plans]
    contexts = [method.ctx for method in methods]
    shared = [method.shared_phases() for method in methods]
    trained = {folder for ctx, phases in zip(contexts, shared, strict=True) for phase, (folder, _) in phases.items()
               if phase_done(folder) or (ctx.run_dir / phase).exists()}
    for plan, ctx, phases in zip(plans, contexts, shared, strict=True):
        if plan.name in restorable or restored_in_full(plan, runs_root, grid.eval) is not None:
            n_evals, done_evals, done_runs = n_evals + len(plan.evals), done_evals + len(plan.evals), done_runs + 1
            rows.append([plan.name, plan.config.method, plan.config.task, plan.config.seed,
                         "restored (evaluated by an earlier call), not retrained",
                         f"{len(plan.evals)}/{len(plan.evals)}"])
            continue
        planned, done = _steps_planned(plan), min(_steps_done(ctx.run_dir), _steps_planned(plan))
        adopted = []
        for phase, (folder, steps) in phases.items():
            if (ctx.run_dir / phase).exists():
                continue
            if folder in trained:
                adopted.append((phase, steps))
            trained.add(folder)
        own_done = done
        adopted_steps = sum(steps for _, steps in adopted)
        done += adopted_steps
        shape = _shape(plan.config.to_dict())
        # a restored run the grid asks more of is set aside and retrained: its copies count for nothing
        set_aside = (ctx.run_dir / RESTORED).is_file()
        evals_left = plan.evals if set_aside else [e for e in plan.evals
                                                   if not finished_evaluations(ctx.run_dir, plan.config, e, grid.eval)]
        evals_done = len(plan.evals) - len(evals_left)
        n_evals += len(plan.evals)
        done_evals += evals_done
        done_runs += done == planned
        note = "".join(f", {phase} shared" for phase, _ in adopted)
        note += ", its restored copies set aside" if set_aside else ""
        holders = sorted({pid for phase in (ctx.run_dir.iterdir() if ctx.run_dir.is_dir() else [])
                          if phase.is_dir() and (pid := holder(phase))})
        note += "".join(f", training in pid {pid}" for pid in holders)  # another `reproduce` of the grid
        state = ("done" if done == planned else f"step {done}/{planned}{note}" if own_done
                 else f"new ({planned - adopted_steps} steps{note})")
        rows.append([plan.name, plan.config.method, plan.config.task, plan.config.seed, state,
                     f"{evals_done}/{len(plan.evals)}"])
        left_steps[shape] = left_steps.get(shape, 0) + planned - done
        if grid.eval.limit is None:
            whole_splits_left += len(evals_left)
        else:
            for planned in evals_left:
                setting = f"{plan.config.method}{''.join(f' {k}={v}' for k, v in sorted(planned.knobs.items()))}"
                key = (setting, *sampling_rate(shape, *resolved_knobs(plan.config, planned), measured_sampling,
                                               scale.seconds_per_sample))
                left_samples[key] = left_samples.get(key, 0) + grid.eval.k * grid.eval.limit
        backbone = ctx.backbone
        if plan.config.model.from_scratch and plan.config.train.base_steps and backbone.objective != SCRATCH:
            base_dir = backbone.base_directory(backbone.objective)
            if not phase_done(base_dir):  # the shared base LM of its family, trained once for all its runs
                base_shape = ("ar-sft", *shape[1:])  # costed as AR-SFT's steps: the same model, a like loss
                bases[base_dir] = (base_shape, plan.config.train.base_steps)
    for base_shape, steps in bases.values():
        left_steps[base_shape] = left_steps.get(base_shape, 0) + steps

    train_s, train_sources, train_unknown = 0.0, set(), 0
    for shape, count in left_steps.items():
        if not count:
            continue
        if shape in measured_train:
            rate, source = measured_train[shape][0] / measured_train[shape][1], "wall, from finished runs here"
        elif shape[0] in scale.seconds_per_step:
            rate, source = float(scale.seconds_per_step[shape[0]]), "scale estimate"
            if shape[-1] == "bf16" and shape[0] in scale.bf16_train_speedup:
                rate /= float(scale.bf16_train_speedup[shape[0]])
                source += f" / its bf16 speedup {scale.bf16_train_speedup[shape[0]]}"
        else:
            train_unknown += count
            continue
        train_s += rate * count
        train_sources.add(f"{shape[0]} {rate:.3g} s/step ({source})")
    sample_s = sum(rate * count for (_, rate, _), count in left_samples.items() if rate is not None)
    sample_unknown = sum(count for (_, rate, _), count in left_samples.items() if rate is None)
    sample_sources = sorted({f"{setting} {rate:.3g} s/sample ({source})"
                             for setting, rate, source in left_samples if rate is not None})
    frame = pd.DataFrame(rows, columns=["run", "method", "task", "seed", "training", "evaluations"])
    limit = "all" if grid.eval.limit is None else grid.eval.limit
    precision = " --precision bf16" if grid.settings.get("train.mixed_precision") == "bf16" else ""
    header = (f"reproduce {table} --scale {scale_name}{precision}: {len(plans)} runs, {n_evals} evaluations "
              f"(k = {grid.eval.k} on {limit} {grid.eval.split} problems each); {scale.about}")
    training = [f"compute left: {sum(left_steps.values())} training steps",
                f" ({len(bases)} shared base LM(s) included)" if bases else "",
                f", ~{_hours(train_s)}" if train_s else "",
                f" (+{train_unknown} steps with no estimate)" if train_unknown else "",
                f" [{'; '.join(sorted(train_sources))}]" if train_sources else ""]
    sampling = [f"              {sum(left_samples.values())} samples to draw and check",
                f", ~{_hours(sample_s)}" if sample_s else "",
                f" (+{sample_unknown} with no estimate)" if sample_unknown else "",
                f" [{'; '.join(sample_sources)}]" if sample_sources else "",
                f", plus {whole_splits_left} evaluations of a whole test split at k = {grid.eval.k}"
                if whole_splits_left else ""]
    lines = [header, "", frame.to_markdown(index=False), "",
             f"already done: {done_runs} of {len(plans)} runs trained, {done_evals} of {n_evals} evaluations",
             "".join(training), "".join(sampling)]
    if scale.estimates:
        lines.append(f"scale estimates: {scale.estimates}")
    if missing:
        lines.append(f"not runnable yet: {missing}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the table
def _metric_name(metric: str, k: int) -> str:
    return f"pass@{k}" if metric == "pass@k" else metric


def _metric_label(metric: str) -> str:
    name, _, k = metric.partition("@")
    if name == "pass":
        return f"P@{k}"
    if k:
        return f"{name.replace('_', '-')}@{k}"
    return METRIC_LABELS.get(metric, metric)


def field_value(evaluation: Evaluation, knobs: dict[str, Any], name: str) -> Any:
    """A run field of one evaluation: method, task (the evaluated one), seed, a sampling knob (as
    sampled, defaults included), or a dotted path into the run's config (`method_options.beta`)."""
    if name == "method":
        return evaluation.run.config.method
    if name == "task":
        return evaluation.eval.task
    if name == "seed":
        return evaluation.run.config.seed
    if name in knobs:
        return knobs[name]
    from harness.methods import get_method_class

    defaults = vars(get_method_class(evaluation.run.config.method).SampleKnobs())
    if name in defaults:  # a knob added after this evaluation was scored: it sampled at the default
        return defaults[name]
    node: Any = evaluation.run.config.to_dict()
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _label(layout: Layout, name: str, value: Any) -> str:
    labels = layout.labels.get(name) or {}
    if value in labels:
        return str(labels[value])
    if "*" in labels and value is not None:
        return str(labels["*"]).format(value=value)
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _matches(values: dict[str, Any], when: dict[str, Any]) -> bool:
    return all(values.get(name) == expected for name, expected in when.items())


@dataclass
class _Row:
    values: dict[str, Any]
    groups: dict[tuple, list[tuple[int, Evaluation, dict]]] = field(default_factory=dict)  # column -> (seed, ...)

    def folders(self, column: tuple) -> list[Path]:
        return [evaluation.folder for _, evaluation, _ in sorted(self.groups.get(column, []), key=lambda g: g[0])]


def _is_default(evaluation: Evaluation) -> bool:
    knobs = {key for key in evaluation.run.cell if key not in ("method", "task", "seed")}
    return not knobs and not evaluation.eval.knobs


def build_rows(layout: Layout, evaluations: list[Evaluation]) -> tuple[list[_Row], list[tuple], _Row | None]:
    """(rows in the grid's order, column keys in order, the baseline row) from the evaluations."""
    rows: dict[tuple, _Row] = {}
    columns: list[tuple] = []
    baseline_key = None
    for evaluation in evaluations:
        metrics = json.loads((evaluation.folder / "metrics.json").read_text())
        knobs = metrics.get("knobs") or {}
        values = {name: field_value(evaluation, knobs, name) for name in layout.rows}
        key = tuple(values[name] for name in layout.rows)
        column = tuple(field_value(evaluation, knobs, name) for name in layout.columns)
        if column not in columns:
            columns.append(column)
        row = rows.setdefault(key, _Row(values))
        row.groups.setdefault(column, []).append((evaluation.run.config.seed, evaluation, metrics))
        baseline = layout.baseline
        if baseline_key is None and ((baseline == "defaults" and _is_default(evaluation))
                                     or (isinstance(baseline, dict) and _matches(values, baseline))):
            baseline_key = key
    return list(rows.values()), columns, rows.get(baseline_key) if baseline_key is not None else None


def _cell_text(row: _Row, column: tuple, metric: str, baseline: _Row | None) -> tuple[str, dict[str, Any]]:
    """The formatted cell and its numbers (for cells.csv)."""
    from harness.evaluate.stats import cell, display_format, format_cell, paired

    digits, scale = METRIC_FORMAT.get(metric) or display_format(metric)

    def recorded_mean() -> tuple[str, dict[str, Any]]:  # the seeds' metrics.json figures, no interval
        values = [recorded(m, metric) for _, _, m in row.groups.get(column, []) if recorded(m, metric) is not None]
        if not values:
            return "—", {}
        mean = sum(values) / len(values)
        return f"{mean * scale:.{digits}f}", {"mean": mean, "n_seeds": len(values)}

    if metric in TABLE_METRICS:
        return recorded_mean()
    folders = row.folders(column)
    if not folders:
        return "—", {}
    found = cell(folders, metric)
    text = format_cell(found, digits=digits, scale=scale)
    record = {"mean": found.mean, "lo": found.lo, "hi": found.hi, "stderr": found.stderr,
              "n_problems": found.n_problems, "n_seeds": found.n_seeds}
    if baseline is not None and baseline is not row and baseline.folders(column):
        comparison = paired(folders, baseline.folders(column), metric)
        text += f" Δ{comparison.diff * scale:+.{digits}f}{'*' if comparison.significant else ''}"
        record.update({"diff": comparison.diff, "diff_lo": comparison.lo, "diff_hi": comparison.hi,
                       "significant": comparison.significant})
    return text, record


def paper_table(spec: TableSpec, layout: Layout, metrics: list[str], evaluations: list[Evaluation], k: int,
                reference: bool = True) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """(header, rows of text, the numbers of every cell) in the paper's layout."""
    rows, columns, baseline = build_rows(layout, evaluations)
    # a row field none of these runs has is left out: the MDM decoder's column of a table without MDM
    shown = [name for name in layout.rows if name == "method" or any(row.values[name] is not None for row in rows)]
    names = [_metric_name(m, k) for m in metrics]
    header = [layout.headers.get(name, name.split(".")[-1]) for name in shown]
    for column in columns:
        prefix = " ".join(_label(layout, name, value) for name, value in zip(layout.columns, column, strict=True))
        header += [f"{prefix} {_metric_label(m)}".strip() for m in names]
    if reference:
        header.append(f"paper ({spec.paper})" if spec.paper else "paper")
    text_rows, records = [], []
    for row in rows:
        values = {name: row.values[name] for name in shown}
        text = [_label(layout, name, value) for name, value in values.items()]
        for column in columns:
            column_values = dict(zip(layout.columns, column, strict=True))
            for metric in names:
                cell_text, numbers = _cell_text(row, column, metric, baseline)
                text.append(cell_text)
                if numbers:
                    records.append({**values, **column_values, "metric": metric, **numbers})
        if reference:
            found = next((entry.get("text", "") for entry in layout.reference
                          if _matches(row.values, entry.get("when") or {})), "")
            text.append(found or "—")
        text_rows.append(text)
    return header, text_rows, records


def _baseline_label(layout: Layout) -> str:
    if layout.baseline == "defaults":
        return "the default run"
    if isinstance(layout.baseline, dict):
        return ", ".join(_label(layout, name, value) for name, value in layout.baseline.items())
    return ""


def _seeds_text(grid: Grid, methods: set[str]) -> str:
    """`0, 1, 2` where every method has the same seeds, else which methods have which."""
    by_method: dict[str, list[int]] = {}
    for part in grid.train_grid:
        for method in part.get("method", []):
            if method in methods:
                by_method[method] = sorted(set(by_method.get(method, [])) | set(part["seed"]))
    groups: dict[tuple, list[str]] = {}
    for method, seeds in by_method.items():
        groups.setdefault(tuple(seeds), []).append(method)
    if len(groups) <= 1:
        return ", ".join(map(str, next(iter(groups), (0,))))
    return "; ".join(f"{', '.join(map(str, seeds))} ({', '.join(names)})" for seeds, names in groups.items())


def table_notes(spec: TableSpec, scale_name: str, scale: Scale, grid: Grid, methods: set[str]) -> list[str]:
    limit = "all" if grid.eval.limit is None else grid.eval.limit
    budget = ", ".join([f"{key} {value}" for key, value in grid.settings.items()]
                       + [f"{method} {key.split('.')[-1]} {value}" for method, settings in grid.method_settings.items()
                          if method in methods for key, value in (settings or {}).items()])
    notes = [f"Scale {scale_name} ({scale.about}): preset {grid.preset}" + (f", {budget}" if budget else "")
             + f"; k = {grid.eval.k} samples on {limit} {grid.eval.split} problems; "
             + f"training seeds {_seeds_text(grid, methods)}.",
             "Cells: mean over test problems (and seeds) [95% bootstrap interval]"
             + (f"; Δ: paired bootstrap difference against {_baseline_label(spec.layout)} on the same problems, "
                "* where its 95% interval excludes 0" if spec.layout.baseline else "")
             + "; a cell without an interval is the mean of the seeds' figures in metrics.json."]
    if spec.paper:
        notes.append(f"Reference column: the paper's own figures ({spec.paper}), as its summary reports them; "
                     "'—' where it gives none.")
    return notes + list(spec.layout.notes)


@dataclass
class Reproduced:
    text: str  # the table in the requested format
    out_dir: Path
    evaluations: list[Evaluation]


def reproduce(table: str, scale_name: str = "tiny", seeds: int | None = None, dry_run: bool = False,
              fmt: str = "markdown", out_dir: Path | None = None, runs_root: Path = Path("runs"),
              data_files: dict[str, str] | None = None, methods: list[str] | None = None,
              tasks: list[str] | None = None, overrides: dict[str, Any] | None = None,
              method_seeds: dict[str, int] | None = None, knobs: dict[str, list[str]] | None = None,
              precision: str = "fp32") -> Reproduced:
    """Plan the table's grid at the scale; with `dry_run`, describe it; else train and evaluate what is
    missing, then write the table (Markdown, LaTeX, CSV), its cells' numbers and its plot under `out_dir`
    (default runs/<table>-<scale>/, or runs/<table>-<scale>-<tasks>/ for a `tasks` selection: another
    selection is another table) and return it in `fmt`. Seeds: `seeds` for every method (default:
    the scale's, and the scale's `method_seeds` for its headline methods), `method_seeds` for the
    methods it names whatever `seeds` says. `knobs` ({KNOB or METHOD.KNOB: values}) keeps the sampling
    grid's points with those values, a part of the table (its default folder is named after them).
    `precision` bf16 trains every run under bf16 autocast (`train.mixed_precision=bf16`: other runs, another
    table, whose default folder ends in -bf16); evaluation samples in float32 either way."""
    if fmt not in FORMATS:
        raise BadInput(f"unknown table format {fmt!r} (markdown, latex, csv)")
    if precision not in PRECISIONS:
        raise BadInput(f"unknown precision {precision!r} (fp32 or bf16)")
    if precision == "bf16":
        overrides = _deep_merge(overrides or {}, {"settings": {"train.mixed_precision": "bf16"}})
    spec, scale = load_table(table), load_scale(scale_name)
    explicit_seeds, seeds = seeds, scale.seeds if seeds is None else seeds
    if seeds < 1:
        raise BadInput(f"--seeds must be >= 1, got {seeds}")
    bad = {method: count for method, count in (method_seeds or {}).items() if not isinstance(count, int) or count < 1}
    if bad:
        given = ", ".join(f"{method}={count}" for method, count in bad.items())
        raise BadInput(f"--method-seeds needs METHOD=N with N >= 1, got {given}")
    files = {name: str(Path(path).expanduser()) for name, path in (data_files or {}).items()}
    unknown = sorted(set(files) - set(spec.data_files))
    if unknown:
        known = ", ".join(spec.data_files) or "none"
        raise BadInput(f"reproduce {table} takes no data file {', '.join(unknown)} (its data files: {known})")
    missing = missing_data(spec, table, files)
    if missing and not dry_run:
        raise BadInput(missing)
    headline_seeds = scale.method_seeds if explicit_seeds is None else {}
    grid = resolve_grid(table, spec, scale_name, scale, seeds, files, methods, tasks, overrides,
                        {**headline_seeds, **(method_seeds or {})}, knobs)
    planned = {method for part in grid.train_grid for method in part.get("method", [])}
    unplanned = sorted(set(method_seeds or {}) - planned)
    if unplanned:
        raise BadInput(f"--method-seeds names {', '.join(unplanned)}, which this table does not train here "
                       f"(it trains {', '.join(sorted(planned))})")
    plans = plan_grid(grid)
    selection = {name: list(values) for name, values in (knobs or {}).items()}
    out_dir = out_dir or runs_root / "-".join([table, scale_name, *(tasks or []),
                                               *(f"{name}{'-'.join(values)}" for name, values in selection.items()),
                                               *([precision] if precision != "fp32" else [])])
    overwritten = _runs_dropped(out_dir, plans) or _rows_dropped(out_dir, selection)
    if dry_run:
        plan_text = describe_plan(table, scale_name, scale, grid, plans, runs_root, missing or overwritten,
                                  _restorable(out_dir, runs_root, plans, grid.eval))
        return Reproduced(plan_text, out_dir, [])
    if overwritten:
        raise BadInput(overwritten)
    if scale.needs_gpu:
        import torch

        if not torch.cuda.is_available():
            raise BadInput(f"scale {scale_name!r} is the paper's GPU setting ({scale.about}); no GPU here: "
                           f"use --dry-run to see its plan, or --scale small / reference")
    started = time.time()
    restore_runs(out_dir, runs_root, plans, grid.eval)
    evaluations = run_plan(plans, runs_root, grid.eval)
    written = write_outputs(table, spec, scale_name, scale, grid, evaluations, out_dir,
                            time.time() - started, selection)
    return Reproduced(written[fmt], out_dir, evaluations)


# ------------------------------------------------------------------------------- the committed copies
SAMPLES_COPY = ".samples.jsonl.gz"  # beside NAME.metrics.json and NAME.manifest.json (harness.evaluate.stats reads it)


def _staging_folder(parent: Path, kind: str) -> Path:
    """A fresh folder `parent/.KIND-*` to assemble something in before it is renamed into place, with the
    mode any other folder there gets; abandoned ones of the same kind are removed first."""
    remove_abandoned(parent, f".{kind}-")
    path = tempfile.mkdtemp(prefix=f".{kind}-{os.getpid()}-", dir=parent)
    chmod_as_created(path, 0o777)
    return Path(path)


def _copy_stem(folder: Path) -> str:
    """The copies' name of an evaluation folder RUN/results/TASK-SPLIT[-CHECKPOINT]/SETTING."""
    return f"{folder.parents[2].name}.{folder.parent.name}.{folder.name}"


def _read_record(out_dir: Path) -> dict[str, Any]:
    """An earlier call's `reproduce.json` in `out_dir` ({} if none)."""
    path = out_dir / "reproduce.json"
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}: malformed JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("results", []), list):
        raise BadInput(f"{path}: not a reproduce record (a mapping with a list of results)")
    return record


def _runs_dropped(out_dir: Path, plans: list[PlannedRun]) -> str | None:
    """Why this call may not write into `out_dir`: the table there holds runs this call does not plan, and
    writing this one would drop their record (their copies are the only one once the runs are gone)."""
    dropped = sorted(set(_read_record(out_dir).get("runs") or []) - {plan.name for plan in plans})
    if not dropped:
        return None
    return (f"{out_dir} holds a table of runs this call does not plan ({', '.join(dropped)}); writing this one "
            f"there would drop their record: use another --out, or the grid that wrote it")


def _rows_dropped(out_dir: Path, selection: dict[str, list[str]]) -> str | None:
    """Why a `--knob` selection may not write into `out_dir`: the table there was not made by the same
    selection, so it may hold rows this part of the grid lacks (a whole grid may write over a part)."""
    record = _read_record(out_dir)
    if not selection or not record or record.get("knobs") == selection:
        return None
    made_by = ", ".join(f"{name}={','.join(values)}" for name, values in (record.get("knobs") or {}).items())
    return (f"{out_dir} holds a table of {'--knob ' + made_by if made_by else 'the whole sampling grid'}; a part "
            f"of the grid written there would drop its other rows: use another --out")


def _restorable(out_dir: Path, runs_root: Path, plans: list[PlannedRun], eval_spec: EvalSpec) -> dict[str, list[Path]]:
    """The evaluations to restore from `out_dir`'s copies (an earlier call's, with their samples): run ->
    its evaluation folders to copy, relative to the runs folder. Only for runs that are not here (or were
    restored before) and that would then hold every evaluation the plan asks of them, each once, at
    exactly the planned limit; a run trained or training here is left alone."""
    by_run: dict[str, list[Path]] = {}
    for relative in _read_record(out_dir).get("results") or []:
        by_run.setdefault(Path(relative).parts[0], []).append(Path(relative))
    restorable = {}
    for plan in plans:
        run_dir = runs_root / plan.name
        if run_dir.exists() and not (run_dir / RESTORED).is_file():
            continue
        if not run_dir.exists() and not (out_dir / "configs" / f"{plan.name}.yaml").is_file():
            continue
        copies = {}
        for folder in by_run.get(plan.name, []):
            stem = out_dir / "evaluations" / _copy_stem(folder)
            if all(Path(f"{stem}{suffix}").is_file() for suffix in (".metrics.json", ".manifest.json", SAMPLES_COPY)):
                copies[folder] = (json.loads(Path(f"{stem}.metrics.json").read_text()),
                                  json.loads(Path(f"{stem}.manifest.json").read_text()))
        wanted = []
        for planned in plan.evals:
            held = finished_evaluations(run_dir, plan.config, planned, eval_spec, exact_limit=True)
            if len(held) == 1:
                continue
            matches = evaluation_matcher(plan.config, run_dir, planned, eval_spec, exact_limit=True)
            offered = [folder for folder, (metrics, manifest) in copies.items() if matches(metrics, manifest)]
            if held or len(offered) != 1:  # not held once here, nor offered once there
                break
            wanted.append(offered[0])
        else:
            if wanted:
                restorable[plan.name] = wanted
    return restorable


def restore_runs(out_dir: Path, runs_root: Path, plans: list[PlannedRun], eval_spec: EvalSpec) -> list[str]:
    """Remake, from an earlier call's `out_dir` (e.g. a committed results folder), the runs of `plans`
    that `runs_root` lacks (`_restorable`): config, and each evaluation's metrics, manifest and samples,
    no weights. `run_plan` then takes their evaluations as they are instead of training them, so a table
    is rebuilt, and a new seed added to it, without retraining what it already holds. A run restored
    before gains the evaluations it lacks. Everything is assembled aside (`.restore-*`: a kill
    leaves it behind, never taken for a run, and a restore a day later removes it) and renamed into
    place, so a kill leaves no half-restored run and two processes restoring at once restore it once."""
    restorable = _restorable(out_dir, runs_root, plans, eval_spec)
    if restorable:
        runs_root.mkdir(parents=True, exist_ok=True)
    for run, folders in restorable.items():
        run_dir = runs_root / run
        staging = _staging_folder(runs_root, "restore")
        try:
            for folder in folders:
                stem = out_dir / "evaluations" / _copy_stem(folder)
                target = staging.joinpath(*folder.parts[1:])
                target.mkdir(parents=True)
                for kind in ("metrics", "manifest"):
                    shutil.copyfile(f"{stem}.{kind}.json", target / f"{kind}.json")
                try:
                    with gzip.open(f"{stem}{SAMPLES_COPY}", "rb") as packed, \
                            (target / "samples.jsonl").open("wb") as plain:
                        shutil.copyfileobj(packed, plain)
                except (gzip.BadGzipFile, EOFError, zlib.error) as error:
                    raise BadInput(f"{stem}{SAMPLES_COPY}: not a readable gzip file ({error})") from None
            marker = run_dir / RESTORED
            sources = json.loads(marker.read_text()).get("evaluations", {}) if marker.is_file() else {}
            sources.update({folder.as_posix(): str(out_dir) for folder in folders})
            write_json_atomic(staging / RESTORED, {"evaluations": sources})
            if not run_dir.exists():
                shutil.copyfile(out_dir / "configs" / f"{run}.yaml", staging / "config.yaml")
                with contextlib.suppress(OSError):  # another process restored it first
                    os.replace(staging, run_dir)
            else:  # restored before: add the evaluations it lacks
                for folder in folders:
                    (run_dir / folder.parent.relative_to(run)).mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(OSError):
                        os.replace(staging.joinpath(*folder.parts[1:]), run_dir.joinpath(*folder.parts[1:]))
                os.replace(staging / RESTORED, marker)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if restorable:
        console.print(f"restored from {out_dir} (evaluated by an earlier call, not retrained): {', '.join(restorable)}")
    return list(restorable)


def write_outputs(table: str, spec: TableSpec, scale_name: str, scale: Scale, grid: Grid,
                  evaluations: list[Evaluation], out_dir: Path, seconds: float,
                  selection: dict[str, list[str]] | None = None) -> dict[str, str]:
    """table.{md,tex,csv} in the paper's layout, cells.csv (every number), reproduce.json (what ran, the
    minutes) and the table's plots; returns the table text per format."""
    from harness.evaluate.report import load_frame, plot, render_paper_table

    tasks = list(dict.fromkeys(e.eval.task for e in evaluations))
    layout = spec.layout
    if len(tasks) > 1 and "task" not in layout.rows + layout.columns:  # one column group per task
        layout = replace(layout, columns=["task", *layout.columns])
    header, rows, records = paper_table(spec, layout, layout.metrics, evaluations, grid.eval.k)
    task_names = ", ".join(_label(layout, "task", task) for task in tasks)
    title = f"{spec.title.replace('{tasks}', task_names)} — ladir-bench reproduce {table} --scale {scale_name}"
    methods = {e.run.config.method for e in evaluations}
    notes = table_notes(spec, scale_name, scale, grid, methods)
    extra = ""
    if layout.diagnostics:
        d_header, d_rows, d_records = paper_table(spec, layout, layout.diagnostics, evaluations,
                                                  grid.eval.k, reference=False)
        records += d_records
        extra = render_paper_table(d_header, d_rows, "markdown", title="Diagnostics (same runs)")
    texts = {fmt: render_paper_table(header, rows, fmt, title=title, notes=notes) for fmt in FORMATS}
    if extra:
        texts["markdown"] += "\n\n" + extra
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt, suffix in FORMATS.items():
        with atomic_open(out_dir / f"table.{suffix}") as handle:
            handle.write(texts[fmt] + "\n")
    with atomic_open(out_dir / "cells.csv") as handle:
        pd.DataFrame(records).to_csv(handle, index=False)
    plot_paths = []
    if spec.plots:
        frame = load_frame([e.folder / "metrics.json" for e in evaluations])
        for kind in spec.plots:
            try:
                plot_paths.append(str(plot(frame, kind, out_dir / f"{kind}.png")))
            except BadInput as error:  # e.g. Pass@k curves of a single k: the table stands without it
                console.print(f"no {kind} plot: {error}")
    # each cell's evaluation (metrics, manifest, every checked sample) and its run's resolved config beside
    # the table: a committed copy of out_dir is the table's whole record without the runs folder
    # (provenance, and what `restore_runs` rebuilds the table from). This table's cells only, not an
    # earlier call's; written aside and swapped in, so a kill leaves the earlier copies whole.
    staged = {name: _staging_folder(out_dir, name) for name in ("evaluations", "configs")}
    try:
        for evaluation in evaluations:
            config = evaluation.folder.parents[2] / "config.yaml"
            if config.is_file():
                shutil.copyfile(config, staged["configs"] / f"{evaluation.run.name}.yaml")
            stem = staged["evaluations"] / _copy_stem(evaluation.folder)
            for kind in ("metrics", "manifest"):
                source = evaluation.folder / f"{kind}.json"
                if source.is_file():
                    write_json_atomic(f"{stem}.{kind}.json", json.loads(source.read_text()))
            samples = evaluation.folder / "samples.jsonl"
            if samples.is_file():
                with samples.open("rb") as plain, gzip.GzipFile(f"{stem}{SAMPLES_COPY}", "wb", mtime=0) as packed:
                    shutil.copyfileobj(plain, packed)
        for name, folder in staged.items():
            target, old = out_dir / name, out_dir / f".{name}-old-{os.getpid()}"
            if target.exists():
                os.replace(target, old)
            os.replace(folder, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
    write_json_atomic(out_dir / "reproduce.json", {
        "table": table, "scale": scale_name, "seeds": _seeds_text(grid, methods),
        "paper": spec.paper,
        "runs": sorted({e.run.name for e in evaluations}),
        "results": [e.folder.relative_to(e.folder.parents[3]).as_posix() for e in evaluations],  # under the runs folder
        "minutes_this_call": round(seconds / 60, 2),
        "train_minutes": round(sum(json.loads((e.folder / "metrics.json").read_text()).get("train_minutes") or 0
                                   for e in {e.run.name: e for e in evaluations}.values()), 2),
        "plots": plot_paths,
        **({"knobs": selection} if selection else {}),  # a part of the sampling grid (`--knob`)
    })
    console.print(f"reproduce {table}: written to {out_dir}")
    return texts
