"""Hostile model output against the code sandbox, through the `humaneval` task's `check_many` as an
evaluation calls it. Every hostile program is a completion for HumanEval/0 that defines the correct
function and does its hostile thing at import, written so that it would PASS if the hostile action
went unnoticed (most assert that the action worked): "not passed" then means the sandbox stopped it.
A few cannot be made to fail (a program may catch the error and go on); for those the test shows
the effect did not happen. Every batch also holds correct solutions, which must still pass.

Each battery runs twice: as this machine's sandbox runs (namespaces where the kernel allows them,
see `code.sandbox_isolation()`), and with the namespace probe made to fail (the fallback: the guard,
rlimits and process-group kill alone). Cases the guard alone cannot stop (raw system calls through
ctypes, a fresh copy of the `posix` module, sockets, reading other processes' files) run only where
namespaces are in force; they are skipped, not failed, elsewhere. After each batch: the scorer is
alive, the call returned within its time bound, nothing outside the sandbox was written or
deleted, no sentinel of a detached child appeared, and no process of the batch is left.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tasks import code, get_task

TIMEOUT, SLACK, WORKERS = 1.0, 2.0, 2
REPO = Path(__file__).resolve().parents[1]
PROC = Path("/proc/self/environ").exists()

pytestmark = pytest.mark.skipif(not PROC, reason="Linux /proc is needed to look for leftover processes")


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # a format string over the context's fields, run at import before the correct function
    expect: str = "fail"  # "fail": not passed; "any": the verdict may pass, the effect must not happen
    raw: bool = False  # only stopped by namespaces (or only safe to run inside them)


CASES = [
    # Writes outside the sandbox.
    Case("write_open", "open({outside!r} + '/open.txt', 'w').write('x')\n"),
    Case("write_io_open", "import io\nio.open({outside!r} + '/io.txt', 'w').write('x')\n", raw=True),
    Case("write_repo_fresh_posix",
         "import _imp, importlib.machinery, os\n"
         "posix = _imp.create_builtin(importlib.machinery.ModuleSpec('posix', None))  # the guard's functions, undone\n"
         "posix.close(posix.open({repo_target!r}, os.O_CREAT | os.O_WRONLY, 0o600))\n", raw=True),
    # Deleting the working directory, its parent (the sample's own temp dir) and beyond.
    Case("rmtree_parent", "import shutil\nshutil.rmtree('..')\n"),
    Case("rmtree_grandparent_after_reload",
         "import importlib, os, shutil\nimportlib.reload(os)\nimportlib.reload(shutil)\nshutil.rmtree('../..')\n"),
    Case("rmdir_cwd", "import os\nos.rmdir(os.path.abspath('.'))\n"),
    Case("posix_unlink", "import posix\nposix.unlink({keep_file!r})\n"),
    Case("raw_unlink", "import ctypes\nassert ctypes.CDLL(None).unlink({keep_file!r}.encode()) == 0\n", raw=True),
    Case("raw_unlink_relative",
         "import ctypes\nassert ctypes.CDLL(None).unlink(b'../../keep/keep.txt') == 0\n", raw=True),
    # Processes.
    Case("fork_bomb", "import os\nwhile True:\n    os.fork()\n"),
    Case("fork_bomb_posix", "import posix\nwhile True:\n    posix.fork()\n"),
    Case("fork_many_raw",  # linear, so harmless even unbounded: 1000 sleepers; the PID namespace allows 300
         "import ctypes\nlibc = ctypes.CDLL(None)\nfor _ in range(1000):\n    pid = libc.fork()\n"
         "    if pid == 0:\n        libc.pause()\n        libc._exit(0)\n    assert pid > 0, 'fork refused'\n", raw=True),
    Case("detached_fork_setsid",
         "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(2)\n"
         "    os.close(os.open({detach_sentinel!r} + '.fork', os.O_CREAT | os.O_WRONLY))\n    os._exit(0)\n"),
    Case("detached_popen",
         "import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 2; echo x > ' + {detach_sentinel!r} + '.popen'],"
         " start_new_session=True)\n"),
    Case("detached_raw",  # the parent goes on and passes; the child must not outlive the sample
         "import ctypes\nlibc = ctypes.CDLL(None)\nif libc.fork() == 0:\n    libc.setsid()\n"
         "    command = ('sleep 2; echo x > ' + {detach_sentinel!r} + '.raw').encode()\n"
         "    libc.execv(b'/bin/sh', (ctypes.c_char_p * 4)(b'sh', b'-c', command, None))\n    libc._exit(1)\n",
         expect="any", raw=True),
    # Network.
    Case("socket_connect",
         "import socket\nconnection = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
         "connection.sendall(b'connect')\nconnection.close()\n", raw=True),
    Case("socket_connect_caught",  # the error is caught: passes; nothing may reach the listener
         "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'caught')\n"
         "except OSError:\n    pass\n", expect="any", raw=True),
    Case("socket_listen",
         "import socket\nserver = socket.socket()\nserver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "server.bind(('0.0.0.0', {listen_port}))\nserver.listen()\nserver.settimeout(0.8)\n"
         "connection, _ = server.accept()\n", raw=True),
    # Time, memory, output.
    Case("infinite_loop", "while True:\n    pass\n"),
    Case("loop_in_c", "sum(range(10**15))\n"),
    Case("memory_bomb", "x = bytearray(8 * 1024**3)\n"),
    Case("memory_growth", "chunks = []\nwhile True:\n    chunks.append(bytes(10**8))  # calloc: address space, not page faults\n"),
    Case("output_bomb_print", "for _ in range(100):\n    print('x' * 10**6)\n", expect="any"),
    Case("output_bomb_fd", "import os\nassert os.write(1, b'x' * 10**8) == 10**8\n"),
    # Exits and signals.
    Case("os_exit", "import os\nos._exit(0)\n"),
    Case("sys_exit", "import sys\nsys.exit(0)\n"),
    Case("builtins_exit", "exit(0)\n"),
    Case("builtins_quit", "__import__('builtins').quit()\n"),
    Case("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"),
    Case("killpg_zero", "import os, signal\nos.killpg(0, signal.SIGKILL)\n"),
    Case("posix_kill_parent", "import os, posix, signal\nposix.kill(os.getppid(), signal.SIGKILL)\n"),
    Case("posix_system", "import posix\nassert posix.system('touch ' + {outside!r} + '/system.txt') == 0\n"),
    Case("reload_os_kill", "import importlib, os, signal\nimportlib.reload(os)\nos.kill(os.getppid(), signal.SIGKILL)\n"),
    Case("sys_modules_os_kill",
         "import sys, signal\ndel sys.modules['os']\nimport os\nos.kill(os.getppid(), signal.SIGKILL)\n"),
    Case("raw_kill_group", "import ctypes, signal\nctypes.CDLL(None).kill(0, signal.SIGKILL)\n"),
    Case("raw_kill_launcher",
         "import ctypes, io, os, signal\n"
         "launcher = int(io.open('/proc/%d/stat' % os.getppid()).read().rsplit(')', 1)[1].split()[1])\n"
         "assert ctypes.CDLL(None).kill(launcher, signal.SIGKILL) == 0\n", raw=True),
    Case("raw_kill_everything",  # never outside a PID namespace: as root that would be every process
         "import ctypes, os, signal\nif os.getpid() != 1:\n    raise SystemExit('not in a PID namespace')\n"
         "ctypes.CDLL(None).kill(-1, signal.SIGKILL)\n", expect="any", raw=True),
    # Reading the harness's files.
    Case("proc_fd_of_harness",
         "import io, os\nfound = False\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n    try:\n"
         "        fds = os.listdir('/proc/%s/fd' % pid)\n    except OSError:\n        continue\n    for fd in fds:\n"
         "        try:\n            target = os.readlink('/proc/%s/fd/%s' % (pid, fd))\n        except OSError:\n"
         "            continue\n        if {secret_name!r} in target:\n"
         "            found = found or io.open('/proc/%s/fd/%s' % (pid, fd)).read() == {secret!r}\n"
         "assert found, 'secret not found'\n", raw=True),
    Case("proc_self_root_read", "import io\nassert io.open('/proc/self/root' + {secret_path!r}).read() == {secret!r}\n",
         raw=True),
    Case("proc_self_cwd_other_samples",
         "import os\nassert len(os.listdir('/proc/self/cwd/../..')) > 1, 'no other sample dirs seen'\n", raw=True),
]


@dataclass
class Battery:
    isolation: dict
    verdicts: dict = field(default_factory=dict)
    correct: list = field(default_factory=list)
    elapsed: float = 0.0
    bound: float = 0.0
    skipped: set = field(default_factory=set)
    received: list = field(default_factory=list)  # what the test's listener got
    reached_listen_port: bool = False
    leftovers: list = field(default_factory=list)
    outside_files: list = field(default_factory=list)
    detach_files: list = field(default_factory=list)
    keep_intact: bool = False
    repo_target_exists: bool = False
    warnings: list = field(default_factory=list)
    launcher_alive: bool = True


def _state(pid: str) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _marked_processes(marker: bytes, exclude: set[int]) -> list[int]:
    """Live processes started for this battery: the marker is in every sandbox process's environment."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            if marker in Path(f"/proc/{entry}/environ").read_bytes() and _state(entry) not in ("Z", "X"):
                found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


def _run_battery(tmp_path_factory, simulate_fallback: bool) -> Battery:
    base = tmp_path_factory.mktemp("hostile")
    outside, sandboxes = base / "outside", base / "sandboxes"
    outside.mkdir()
    keep = sandboxes / "keep"  # a sibling of every sample's temp dir: '../..' from its cwd
    keep.mkdir(parents=True)
    (keep / "keep.txt").write_text("precious")
    secret = secrets.token_hex(8)
    secret_path = base / f"ladir-secret-{secret}.txt"
    secret_path.write_text(secret)
    secret_handle = secret_path.open()  # held open by the scorer's process, as a data file would be
    marker = f"LADIR_HOSTILE_{secrets.token_hex(8)}"
    repo_target = REPO / f".ladir-hostile-{secrets.token_hex(4)}"

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    listen_port = probe.getsockname()[1]
    probe.close()
    stop = threading.Event()
    received: list[bytes] = []
    reached = []

    def listen() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            connection.settimeout(1)
            try:
                received.append(connection.recv(64))
            except OSError:
                received.append(b"(connected)")
            connection.close()

    def knock() -> None:  # keeps trying to reach a server a sample may have started
        while not stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", listen_port), timeout=0.2).close()
                reached.append(True)
            except OSError:
                time.sleep(0.05)

    context = {
        "outside": str(outside), "keep_file": str(keep / "keep.txt"), "repo_target": str(repo_target),
        "detach_sentinel": str(outside / "detached"), "port": listener.getsockname()[1], "listen_port": listen_port,
        "secret": secret, "secret_name": secret_path.name, "secret_path": str(secret_path),
    }
    with pytest.MonkeyPatch.context() as patch:
        warnings: list[str] = []
        if simulate_fallback:  # as if unshare were denied: the probe fails, the guard alone remains
            patch.setattr(code, "_ISOLATION", None)
            patch.setattr(code, "_probe_isolation", lambda: code._no_namespaces("simulated: unshare denied"))
            patch.setattr(code, "_warn", warnings.append)
        isolation = code.sandbox_isolation()
        code.sandbox_isolation()  # remembered: one probe, one warning
        battery = Battery(isolation=isolation, warnings=warnings)
        original_env = code._child_env
        patch.setattr(code, "_child_env", lambda workdir: {**original_env(workdir), "LADIR_HOSTILE_MARKER": marker})
        patch.setattr(tempfile, "tempdir", str(sandboxes))
        code._close_launcher()  # a fresh launcher, with the marker in its environment
        task = get_task("humaneval", timeout=TIMEOUT, memory_mb=1024, startup_slack=SLACK)
        problem = {p["task_id"]: p for p in task.problems("test")}["HumanEval/0"]
        correct = problem["prompt"] + problem["canonical_solution"]
        cases = []
        for case in CASES:
            if case.raw and not isolation["namespaces"]:
                battery.skipped.add(case.name)
                continue
            if case.name == "fork_many_raw" and not isolation.get("observed", {}).get("max_processes"):
                battery.skipped.add(case.name)  # kernel < 6.14: a PID namespace has no process bound
                continue
            cases.append(case)
        items = [(problem, correct)] + [(problem, case.source.format(**context) + correct) for case in cases]
        items.append((problem, problem["canonical_solution"]))
        threads = [threading.Thread(target=listen, daemon=True), threading.Thread(target=knock, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            start = time.monotonic()
            verdicts = task.check_many(items, workers=WORKERS)
            battery.elapsed = time.monotonic() - start
            battery.bound = math.ceil(len(items) / WORKERS) * (TIMEOUT + SLACK + 0.5) + 10
            time.sleep(3)  # the detached children meant to write their sentinels after 2 s
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            listener.close()
            secret_handle.close()
            launcher = code._LAUNCHER
            exclude = {os.getpid()} | ({launcher.process.pid} if launcher is not None else set())
            battery.launcher_alive = launcher is not None and launcher.alive()
            battery.leftovers = _marked_processes(marker.encode(), exclude)
            code._close_launcher()
            battery.repo_target_exists = repo_target.exists()
            if battery.repo_target_exists:
                repo_target.unlink()
    battery.correct = [verdicts[0], verdicts[-1]]
    battery.verdicts = {case.name: verdict for case, verdict in zip(cases, verdicts[1:-1])}
    battery.received, battery.reached_listen_port = received, bool(reached)
    battery.outside_files = sorted(path.name for path in outside.iterdir())
    battery.detach_files = [name for name in battery.outside_files if name.startswith("detached")]
    battery.keep_intact = (keep / "keep.txt").exists() and (keep / "keep.txt").read_text() == "precious"
    return battery


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    return _run_battery(tmp_path_factory, simulate_fallback=False)


@pytest.fixture(scope="module")
def fallback(tmp_path_factory):
    return _run_battery(tmp_path_factory, simulate_fallback=True)


@pytest.fixture(params=["native", "fallback"])
def battery(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_case_is_not_scored_as_passing(battery, case):
    if case.name in battery.skipped:
        pytest.skip(f"needs namespaces ({battery.isolation.get('reason', '')}): the guard alone does not stop it")
    verdict = battery.verdicts[case.name]
    if case.expect == "fail":
        assert not verdict.passed, verdict
    assert len(verdict.reason) < 1000  # the output was truncated, however much was printed
    # The effect, whatever the verdict.
    if case.name.startswith("socket_connect"):
        assert not battery.received, battery.received
    if case.name == "socket_listen":
        assert not battery.reached_listen_port
    if case.name.startswith("detached"):
        assert not battery.detach_files


def test_hostile_case_verdict_reasons(native):
    """The reasons a few cases fail for, where they say which mechanism stopped them."""
    v = native.verdicts
    assert v["infinite_loop"].reason == "timed out"
    assert v["loop_in_c"].reason.startswith("timed out")
    assert v["memory_bomb"].reason == "memory" and v["memory_growth"].reason == "memory"
    assert v["os_exit"].reason.startswith("failed: exited with code 0")
    assert "NoneType" in v["kill_parent"].reason and "NoneType" in v["posix_kill_parent"].reason
    assert "NoneType" in v["reload_os_kill"].reason and "NoneType" in v["fork_bomb_posix"].reason
    assert v["raw_kill_group"].reason == "failed: the sandbox monitor was killed before the tests finished"
    if native.isolation["namespaces"]:
        assert "Read-only file system" in v["write_repo_fresh_posix"].reason
        if "fork_many_raw" not in native.skipped:
            assert "fork refused" in v["fork_many_raw"].reason
        assert "Network is unreachable" in v["socket_connect"].reason


def test_battery_leaves_scoring_sound(battery):
    assert [v.passed for v in battery.correct] == [True, True], battery.correct  # the others still pass
    assert battery.elapsed <= battery.bound, (battery.elapsed, battery.bound)
    assert not battery.leftovers, f"processes left behind: {battery.leftovers}"
    assert battery.outside_files == [], battery.outside_files
    assert battery.keep_intact and not battery.repo_target_exists
    assert not battery.received and not battery.reached_listen_port


def test_fallback_warns_once_and_says_why(fallback):
    assert fallback.isolation["namespaces"] is False and "simulated" in fallback.isolation["reason"]
    assert len(fallback.warnings) == 1 and "without namespaces" in fallback.warnings[0]


def test_isolation_report(native):
    info = native.isolation
    assert set(info) >= {"namespaces", "network", "filesystem", "processes", "guard"}
    if info["namespaces"]:
        assert all(info["observed"][key] for key in ("pid_namespace", "network_namespace", "read_only_outside",
                                                     "sandbox_writable", "no_capabilities"))
    else:
        assert info["reason"]


def test_namespaces_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(code.NAMESPACES_ENV, "0")
    assert code._probe_isolation() == code._no_namespaces(f"{code.NAMESPACES_ENV}=0")
