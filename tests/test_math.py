"""Math tasks: synthetic arithmetic, GSM8K/MATH-500 loaders, and the math-verify checker with timeouts."""

from __future__ import annotations

import json
import operator
import time

import pytest

import tasks.math as math_tasks
from harness.errors import BadInput
from tasks.math import (
    GSM8K,
    Arith,
    Math500,
    TimeoutWorkerPool,
    extract_math_answer,
    plain_integer,
)

SMALL = {"train_size": 400, "val_size": 50, "test_size": 100}
STALL = "STALL"


def _slow_judge(gold: str, predicted: str):
    """Stands in for a comparison sympy never finishes (runs in a worker, imported from this module)."""
    if predicted == STALL:
        time.sleep(60)
    return math_tasks.judge_math_answer(gold, predicted)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


# ---------------------------------------------------------------------------- arith


def test_arith_references_check_correct_and_splits_disjoint():
    task = Arith(seed=5, options=SMALL)
    problems = {split: task.problems(split) for split in ("test", "val", "train")}
    assert {split: len(p) for split, p in problems.items()} == {"test": 100, "val": 50, "train": 400}
    for split, split_problems in problems.items():
        verdicts = task.check_many([(p, p["reference"]) for p in split_problems])
        assert all(v.passed for v in verdicts), split
        for index, problem in enumerate(split_problems):
            assert problem["task_id"] == f"arith/{split}/{index}"
            sentences, answer = task.split_target(problem["reference"])
            assert 2 <= len(sentences) <= 6
            assert answer == f"The answer is {problem['answer']}."
            assert int(problem["answer"]) >= 0
    test_prompts = {p["prompt"] for p in problems["test"]}
    assert not test_prompts & {p["prompt"] for p in problems["train"]}
    assert not test_prompts & {p["prompt"] for p in problems["val"]}
    assert Arith(seed=5, options=SMALL).problems("train") == problems["train"]
    assert Arith(seed=6, options=SMALL).problems("test") != problems["test"]


def test_arith_equations_are_consistent():
    # Every equation sentence is true and every intermediate is a non-negative integer.
    task = Arith(seed=0, options=SMALL)
    for problem in task.problems("test"):
        sentences, _ = task.split_target(problem["reference"])
        for sentence in sentences:
            left, right = sentence.rstrip(".").split("=")
            a, op, b = next((left.partition(o) for o in "+-*/" if o in left))
            value = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](int(a), int(b))
            assert value == int(right) >= 0


# ---------------------------------------------------------------------------- checker


def test_answer_extraction():
    assert extract_math_answer("so 5+12=17. The answer is 17.") == "17"
    assert extract_math_answer("The answer is $\\frac{1}{2}$.") == "$\\frac{1}{2}$"
    assert extract_math_answer("thus \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_math_answer("The answer is \\boxed{\\sqrt{x^{2}}}.") == "\\sqrt{x^{2}}"
    assert extract_math_answer("\\boxed{3} then the answer is 4.") == "4"
    assert extract_math_answer("the answer is 4. Finally \\boxed{5}") == "5"
    assert extract_math_answer("The answer is 7.\nQuestion: next one") == "7"
    assert extract_math_answer("no final answer") is None
    assert extract_math_answer("\\boxed{unclosed") is None
    assert plain_integer("1,000") == 1000 and plain_integer("$-7$") == -7
    assert plain_integer("17.0") is None and plain_integer("1,00") is None


def test_equivalent_answers_accepted_and_wrong_rejected():
    task = Arith(seed=0)
    seventeen, half = {"answer": "17"}, {"answer": "\\frac{1}{2}"}
    items = [
        (seventeen, "5+12=17. The answer is 17."),
        (seventeen, "so \\boxed{17}"),
        (seventeen, "the answer is 17.0"),
        (seventeen, "The answer is $17$."),
        (half, "The answer is 0.5."),
        (half, "The answer is \\frac{1}{2}."),
        (half, "The answer is 1/2"),
        (half, "we get \\boxed{\\dfrac{1}{2}}"),
        (seventeen, "The answer is 18."),
        (seventeen, "The answer is 17.5"),
        (half, "The answer is 0.25"),
        (half, "The answer is banana"),
        (seventeen, "I don't know"),
        (seventeen, "The answer is " + "9" * 5000),
    ]
    verdicts = task.check_many(items)
    assert [v.passed for v in verdicts] == [True] * 8 + [False] * 6
    assert verdicts[0].canonical == verdicts[1].canonical == verdicts[2].canonical == "17"
    assert verdicts[4].canonical == verdicts[5].canonical == "1/2"
    assert verdicts[4].answer == "0.5"
    assert task.check(half, "The answer is 0.5").passed


def test_stuck_comparison_times_out_and_pool_keeps_working(monkeypatch):
    task = Arith(seed=0, options={"check_timeout": 1.5})
    half = {"answer": "\\frac{1}{2}"}
    monkeypatch.setattr(math_tasks, "_judge_job", _slow_judge)
    started = time.monotonic()
    verdicts = task.check_many([(half, "The answer is 0.5"), (half, f"The answer is {STALL}"),
                                (half, "The answer is 2/4"), (half, "The answer is 1/3")], workers=2)
    assert time.monotonic() - started < 30
    assert [v.passed for v in verdicts] == [True, False, True, False]
    assert "timeout" in verdicts[1].reason
    # The stuck worker was replaced: the pool still answers afterwards.
    monkeypatch.setattr(math_tasks, "_judge_job", math_tasks.judge_math_answer)
    assert [v.passed for v in task.check_many([(half, "The answer is 0.5"), (half, "The answer is 3")], workers=2)] == [True, False]


def test_worker_pool_timeouts_errors_and_replacement():
    pool = TimeoutWorkerPool(preload=())
    try:
        outcomes = pool.run([(time.sleep, (60,)), (operator.add, (1, 2)), (operator.truediv, (1, 0))],
                            timeout_s=1.0, max_workers=2)
        assert [o.status for o in outcomes] == ["timeout", "ok", "error"]
        assert outcomes[1].value == 3 and "ZeroDivisionError" in outcomes[2].value
        pids_before = pool.worker_pids
        again = pool.run([(operator.mul, (i, i)) for i in range(6)], timeout_s=5.0, max_workers=2)
        assert [o.value for o in again] == [i * i for i in range(6)]
        assert pool.worker_pids == pids_before  # workers are reused between runs
    finally:
        pool.close()


# ---------------------------------------------------------------------------- loaders


def test_gsm8k_local_file(tmp_path):
    rows = [
        {"question": "Natalia sold clips to 48 friends in April, and half as many in May. How many in all?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips\n#### 72"},
        {"question": "A big one?", "answer": "It costs 1,000 + 200 = <<1000+200=1200>>1,200 dollars.\n#### 1,200"},
    ]
    task = GSM8K(seed=0, options={"data_file": _write_jsonl(tmp_path / "gsm8k.jsonl", rows)})
    problems = task.problems("test")
    assert len(problems) == 2 and problems[0]["task_id"] == "gsm8k/test/0"
    assert problems[0]["prompt"].startswith("Question: Natalia") and problems[0]["prompt"].endswith("\n")
    assert problems[0]["reference"] == (
        "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips. The answer is 72.")
    assert problems[0]["answer"] == "72" and problems[1]["answer"] == "1200"
    assert task.split_target(problems[0]["reference"])[0] == [
        "Natalia sold 48/2 = 24 clips in May.", "Natalia sold 48+24 = 72 clips."]
    assert all(v.passed for v in task.check_many([(p, p["reference"]) for p in problems]))
    assert task.check(problems[1], "The answer is 1,200.").passed
    # The file is the test set, or the training file that train and val are carved from (val: its last tenth)
    assert len(task.problems("train")) == 2 and task.problems("val") == []
    many = GSM8K(seed=0, options={"data_file": _write_jsonl(tmp_path / "train.jsonl", rows * 10)})
    train, val = many.problems("train"), many.problems("val")
    assert len(train) == 18 and len(val) == 2 and len(many.problems("test")) == 20
    assert val[0]["task_id"] == "gsm8k/val/0" and val[1]["answer"] == "1200"


def test_math500_local_file(tmp_path):
    rows = [
        {"problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.", "solution": "We get $\\boxed{\\frac{3}{4}}$.",
         "answer": "\\frac{3}{4}", "subject": "Algebra", "level": 1, "unique_id": "x"},
        {"problem": "Convert $(0,3)$ to polar.", "solution": "So $\\boxed{(3,\\frac{\\pi}{2})}$.",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2, "unique_id": "y"},
    ]
    task = Math500(seed=0, options={"data_file": _write_jsonl(tmp_path / "math500.jsonl", rows)})
    assert task.splits == ("test",)
    problems = task.problems("test")
    assert problems[0]["reference"] == "We get $\\boxed{\\frac{3}{4}}$. The answer is \\frac{3}{4}."
    assert all(v.passed for v in task.check_many([(p, p["reference"]) for p in problems]))
    assert task.check(problems[0], "The answer is 0.75.").passed
    assert task.check(problems[1], "\\boxed{(3, \\pi/2)}").passed
    assert not task.check(problems[1], "\\boxed{(3, \\pi)}").passed
    with pytest.raises(BadInput):
        task.problems("train")


def test_bad_data_files(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        GSM8K(seed=0, options={"data_file": str(tmp_path / "missing.jsonl")}).problems("test")
    with pytest.raises(BadInput, match="not found"):
        Math500(seed=0, options={"data_file": str(tmp_path / "missing.parquet")}).problems("test")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(BadInput, match="expected"):
        GSM8K(seed=0, options={"data_file": str(tmp_path / "data.csv")}).problems("test")
    no_field = _write_jsonl(tmp_path / "nofield.jsonl", [{"question": "q"}])
    with pytest.raises(BadInput, match="answer"):
        GSM8K(seed=0, options={"data_file": no_field}).problems("test")
    no_marker = _write_jsonl(tmp_path / "nomarker.jsonl", [{"question": "q", "answer": "42"}])
    with pytest.raises(BadInput, match="####"):
        GSM8K(seed=0, options={"data_file": no_marker}).problems("test")
