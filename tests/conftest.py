"""Shared settings, the CLI runner and the session's micro runs.

Settings
    `MICRO_SETTINGS` / `micro_args(*extra)`: a ~50k-parameter model, small splits, a few steps (seconds
    on CPU), as `--set` arguments.

Running the CLI
    `run_cli(args, runs_dir=None, check=True, env=None, fresh_process=False)` runs `ladir-bench ARGS`
    with `LADIR_RUNS=runs_dir` and returns a `subprocess.CompletedProcess` (returncode, stdout, stderr;
    `check` raises on a non-zero exit). It runs in this process, through `harness.cli.main` (no second
    torch + transformers import), unless the test is about the process: `fresh_process=True`, or an
    `env` (read at start-up: PYTHONPATH, HF_HUB_OFFLINE, ...), runs `python -m harness.cli` instead.
    Use a fresh process for kills, signals, locks held by another process, several processes, or
    anything imported from a changed environment.

Micro runs built once per session (read-only: copy before changing)
    `micro_base`: a runs folder holding only the shared base checkpoint (`_base/`) of `MICRO_SETTINGS` on
        countdown3, the base every micro run of any method starts from.
    `runs_dir`: a test's own runs folder, empty but for a copy of that base (as any run after the first
        finds it), so a micro run trains only its own phases.
    `ar_sft_micro`: a runs folder with the AR-SFT micro run `ar-sft` (`AR_SFT_MICRO`: countdown3,
        `MICRO_SETTINGS`, 8 steps, checkpoints at 4 and 8), not evaluated.
    `ladir_micro`: a runs folder with the LaDiR micro run `ladir` (`LADIR_MICRO`: countdown3,
        `MICRO_SETTINGS`, 4 steps over VAE, stage 1 and stage 2 with `LADIR_MICRO_OPTIONS`), not evaluated.
    `copy_run(source, name, runs_dir, as_name=None)` copies one of those runs (and the bases it starts
    from) into a test's runs folder, under another name if asked, e.g.
    `copy_run(ar_sft_micro, "ar-sft", runs_dir, "ev")`; re-running `train` with the same arguments
    (`[*AR_SFT_MICRO, "--run", "ev"]`) then finds it finished.

The unit tests' model (no run folder)
    `micro_lm(tokenizer, seed=0, num_layers=2)`: a 32-wide Llama over a character tokenizer; the
    module-scoped fixtures `tokenizer` (characters of `COUNTDOWN_TEXT` and `ANSWER_CHARS`) and `model`
    (`micro_lm` of it, in eval mode, read-only) for modules that need no other text; `reasoner`, a
    LaDiR `BlockDiffusionReasoner` on `micro_lm` (L_b = 2, d_z = 3), and `ids(tokenizer, text)`.

Torch runs on one thread (`OMP_NUM_THREADS=1`, inherited by subprocesses, unless set): micro models are
faster so, and in-process and subprocess runs then compute alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("LADIR_NO_PROGRESS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

# A ~50k-parameter model, small splits and a few steps: enough to exercise every code path.
MICRO_SETTINGS = [
    "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
    "train.batch_size=8", "train.base_steps=6", "train.checkpoint_every=4", "train.warmup_steps=2",
    "train.log_every=1", "task_options.train_size=400", "task_options.val_size=20", "task_options.test_size=20",
    "eval.max_new_tokens=48",
]


def micro_args(*extra: str) -> list[str]:
    args = []
    for setting in [*MICRO_SETTINGS, *extra]:
        args += ["--set", setting]
    return args


# The session's micro runs: `train` arguments without `--run`.
AR_SFT_MICRO = ["train", "--method", "ar-sft", "--task", "countdown3", "--steps", "8", *micro_args()]
LADIR_MICRO_OPTIONS = (
    "method_options={latent_tokens: 2, latent_dim: 4, vae_steps: 4, stage2_steps: 2, stage2_euler_steps: 2, "
    "stats_problems: 20, report_problems: 4, reasoner_init: decoder, cfg_drop: 0.2, fm_repeats: 2, stage2_t0: 0.5, "
    "stage2_tf_answer: 1.0, stage2_answer: implied, decoder_context: reasoning}")
LADIR_MICRO = ["train", "--method", "ladir", "--task", "countdown3", "--steps", "4", *micro_args(LADIR_MICRO_OPTIONS)]


def run_cli(args: list[str], runs_dir: Path | None = None, check: bool = True, env: dict | None = None,
            fresh_process: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """`ladir-bench ARGS`: in this process, or in a fresh one when asked, given an `env`, or given
    `subprocess.run` options (`kwargs`)."""
    if fresh_process or env is not None or kwargs:
        result = _run_subprocess(args, runs_dir, env, **kwargs)
    else:
        result = _run_in_process(args, runs_dir)
    if check and result.returncode != 0:
        raise AssertionError(f"ladir-bench {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _run_subprocess(args: list[str], runs_dir: Path | None, env: dict | None, **kwargs) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "LADIR_NO_PROGRESS": "1"}
    if runs_dir is not None:
        env["LADIR_RUNS"] = str(runs_dir)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          check=False, **kwargs)


def _run_in_process(args: list[str], runs_dir: Path | None) -> subprocess.CompletedProcess:
    """What the process would print and exit with: SystemExit's code, an uncaught exception's traceback
    on stderr and exit 1. accelerate's per-process state is reset around the call, as a new process
    would find it."""
    from accelerate.state import AcceleratorState

    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LADIR_NO_PROGRESS", "1")
        if runs_dir is not None:
            patch.setenv("LADIR_RUNS", str(runs_dir))
        patch.setattr(sys, "argv", ["ladir-bench", *args])
        AcceleratorState._reset_state(reset_partial_state=True)
        try:
            with _output_to(out, err):
                try:
                    main()
                    code = 0
                except SystemExit as done:
                    code = done.code if isinstance(done.code, int) else int(done.code is not None)
                except Exception:  # noqa: BLE001  (the interpreter's report of an uncaught exception)
                    traceback.print_exc()
                    code = 1
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
    return subprocess.CompletedProcess(["ladir-bench", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _output_to(out: io.StringIO, err: io.StringIO):
    """stdout and stderr into `out` and `err`, with what a fresh process would also print there: the
    logging handlers bound to them (transformers binds one to stderr on import) and Python's warnings
    under the interpreter's default filters (pytest would otherwise record them)."""
    streams = {id(sys.stdout): out, id(sys.__stdout__): out, id(sys.stderr): err, id(sys.__stderr__): err}
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    handlers = [handler for logger in loggers for handler in logger.handlers
                if type(handler) is logging.StreamHandler and id(handler.stream) in streams]
    previous = [handler.setStream(streams[id(handler.stream)]) for handler in handlers]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: err.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            yield
    finally:
        for handler, stream in zip(handlers, previous):
            handler.setStream(stream)


def copy_run(source: Path, name: str, runs_dir: Path, as_name: str | None = None) -> Path:
    """Run `name` of the runs folder `source` copied into `runs_dir` (as `as_name`), with its bases."""
    target = runs_dir / (as_name or name)
    shutil.copytree(source / name, target)
    shutil.copytree(source / "_base", runs_dir / "_base", dirs_exist_ok=True)
    return target


COUNTDOWN_TEXT = "Use 12 7 3 to make 57.\n12+7=19. 19*3=57. The answer is (12+7)*3."
ANSWER_CHARS = "0123456789+-*/=().TheanswrisUk "


def micro_lm(tokenizer, seed: int = 0, num_layers: int = 2):
    from harness.backbone import tiny_llama
    from harness.config import ModelConfig

    config = ModelConfig(hidden_size=32, num_layers=num_layers, num_heads=2, intermediate_size=64)
    return tiny_llama(config, len(tokenizer), tokenizer, seed)


@pytest.fixture(scope="module")
def tokenizer():
    from harness.backbone import build_char_tokenizer

    return build_char_tokenizer([COUNTDOWN_TEXT, ANSWER_CHARS])


@pytest.fixture(scope="module")
def model(tokenizer):
    return micro_lm(tokenizer).eval()


@pytest.fixture
def reasoner(tokenizer):
    import torch

    from ladir.reasoner import BlockDiffusionReasoner

    torch.manual_seed(0)
    return BlockDiffusionReasoner(micro_lm(tokenizer), tokenizer, latent_tokens=2, latent_dim=3)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory) -> Path:
    from accelerate.state import AcceleratorState

    from harness.config import load_config, parse_override
    from harness.context import RunContext

    root = tmp_path_factory.mktemp("micro-base")
    config = load_config("tiny", None, [parse_override(s) for s in ["task=countdown3", *MICRO_SETTINGS]])
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            RunContext(config, root / "unused", root).backbone.base_model()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert [p.name for p in root.iterdir()] == ["_base"]
    return root


@pytest.fixture
def runs_dir(tmp_path: Path, micro_base: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(micro_base / "_base", runs / "_base")
    return runs


@pytest.fixture(scope="session")
def ar_sft_micro(tmp_path_factory, micro_base: Path) -> Path:
    root = tmp_path_factory.mktemp("ar-sft-micro")
    shutil.copytree(micro_base / "_base", root / "_base")
    run_cli([*AR_SFT_MICRO, "--run", "ar-sft"], root)
    return root


@pytest.fixture(scope="session")
def ladir_micro(tmp_path_factory, micro_base: Path) -> Path:
    root = tmp_path_factory.mktemp("ladir-micro")
    shutil.copytree(micro_base / "_base", root / "_base")
    run_cli([*LADIR_MICRO, "--run", "ladir"], root)
    return root
