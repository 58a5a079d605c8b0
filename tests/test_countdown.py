"""Countdown: generated problems are solvable and disjoint; the checker is exact and unbreakable."""

from __future__ import annotations

import json

import pytest

from tasks.countdown import Countdown3, Countdown4, Countdown5, check_countdown_answer

SMALL = {"train_size": 300, "val_size": 50, "test_size": 100}
NUMBERS, TARGET = [12, 45, 67, 3], 300


def _key(problem):
    return tuple(sorted(problem["numbers"])), problem["target"]


@pytest.mark.parametrize("task_class,n_numbers", [(Countdown3, 3), (Countdown4, 4), (Countdown5, 5)])
def test_reference_solutions_check_correct(task_class, n_numbers):
    task = task_class(seed=3, options=SMALL)
    for split in ("test", "val", "train"):
        problems = task.problems(split)
        assert len(problems) == SMALL[f"{split}_size"]
        for index, problem in enumerate(problems):
            assert problem["task_id"] == f"{task.name}/{split}/{index}"
            assert len(problem["numbers"]) == n_numbers
            assert all(1 <= n <= 99 for n in problem["numbers"])
            assert 10 <= problem["target"] <= 99
            assert all(str(n) in problem["prompt"] for n in problem["numbers"])
            assert str(problem["target"]) in problem["prompt"]
            # One reasoning sentence per operation, then the answer sentence.
            sentences, answer = task.split_target(problem["reference"])
            assert len(sentences) == n_numbers - 1
            assert answer.startswith("The answer is ")
            verdict = task.check(problem, problem["reference"])
            assert verdict.passed, (problem, verdict)


def test_splits_deterministic_and_disjoint():
    first, second = Countdown4(seed=1, options=SMALL), Countdown4(seed=1, options=SMALL)
    for split in ("train", "val", "test"):
        assert first.problems(split) == second.problems(split)
    assert Countdown4(seed=2, options=SMALL).problems("test") != first.problems("test")
    test_keys = {_key(p) for p in first.problems("test")}
    val_keys = {_key(p) for p in first.problems("val")}
    train_keys = {_key(p) for p in first.problems("train")}
    assert not test_keys & train_keys and not val_keys & train_keys and not test_keys & val_keys
    # Resizing train leaves the held-out splits untouched.
    bigger = Countdown4(seed=1, options={**SMALL, "train_size": 600})
    assert bigger.problems("test") == first.problems("test")


def test_default_sizes():
    assert Countdown3(seed=0).split_size("train") == 50_000
    assert Countdown3(seed=0).split_size("val") == 500
    assert Countdown3(seed=0).split_size("test") == 1_000


@pytest.mark.parametrize("completion", [
    "45+67=112. 112-12=100. 100*3=300. The answer is (45+67-12)*3.",
    "The answer is (45+67-12)*3",
    "the answer is  ( 45 + 67 - 12 ) * 3 .",
    "THE ANSWER IS (45+67-12)*3 = 300.",
    "The answer is: 3*(67+45-12)",
    "The answer is (67-12+45)*3.",
    "The answer is ((45+67)-12)*3.\nQuestion: something the model kept generating",
    "I think the answer is 2. Wait. The answer is 3*(45-12+67).",
])
def test_correct_answers_in_several_forms(completion):
    verdict = check_countdown_answer(NUMBERS, TARGET, completion)
    assert verdict.passed, verdict


@pytest.mark.parametrize("completion,reason_part", [
    ("The answer is (45+67-12)*2.", "uses"),  # 2 is not given
    ("The answer is 45+67-12+3.", "evaluates"),  # wrong value
    ("The answer is (45+67-12)*3*3/3.", "uses"),  # 3 reused
    ("The answer is (45+67)*3.", "uses"),  # 12 missing
    ("The answer is __import__('os').system('x')", "not allowed"),
    ("The answer is 9**9**9", "Pow"),
    ("The answer is 2**100", "Pow"),
    ("The answer is 12/(45-45)+67+3", "division by zero"),
    ("The answer is 12/(3-3)*45+67", "division by zero"),
    ("The answer is abs(12)+45+67+3", "not allowed"),
    ("The answer is x+45+67+3", "not allowed"),
    ("The answer is -12+45+67*3", "not allowed"),
    ("The answer is 12.0+45+67+3", "not an integer"),
    ("The answer is 0x0c+45+67+3", "decimal"),
    ("The answer is 1_2+45+67+3", "decimal"),
    ("The answer is True+45+67+3", "not an integer"),
    ("The answer is '12'+45", "not an integer"),
    ("The answer is [12][0]+45+67+3", "not allowed"),
    ("The answer is 12 if 1 else 3", "not allowed"),
    ("The answer is 12%45+67+3", "Mod"),
    ("The answer is 123456789123*45", "too large"),
    ("The answer is 99999*99999*99999*99999*99999*99999*99999", "too large"),
    ("The answer is " + "1" * 10_000, "too long"),
    ("The answer is " + "(" * 5_000 + "1" + ")" * 5_000, "too long"),
    ("The answer is (((45+67", "unparseable"),
    ("The answer is 45 67 12 3", "unparseable"),
    ("The answer is", "empty"),
    ("The answer is .", "empty"),
    ("45+67=112. no final answer here", "no 'The answer is'"),
    ("", "no 'The answer is'"),
])
def test_wrong_and_hostile_answers_rejected(completion, reason_part):
    verdict = check_countdown_answer(NUMBERS, TARGET, completion)
    assert not verdict.passed
    assert reason_part in verdict.reason, verdict


def test_canonical_form_identifies_solutions():
    def canonical(expression, numbers, target):
        verdict = check_countdown_answer(numbers, target, f"The answer is {expression}.")
        assert verdict.passed, verdict
        return verdict.canonical

    assert canonical("20+30", [20, 30], 50) == canonical("30+20", [20, 30], 50)
    assert canonical("(10+20)+30", [10, 20, 30], 60) == canonical("10+(20+30)", [10, 20, 30], 60)
    assert canonical("10+20+30", [10, 20, 30], 60) == canonical("30+20+10", [10, 20, 30], 60)
    assert canonical("(2*3)*5", [2, 3, 5], 30) == canonical("5*(3*2)", [2, 3, 5], 30)
    assert canonical("(45+67-12)*3", NUMBERS, TARGET) == canonical("3*(67+45-12)", NUMBERS, TARGET)
    # Different operations are different solutions.
    assert canonical("(45+67-12)*3", NUMBERS, TARGET) != canonical("(67-12+45)*3", NUMBERS, TARGET)
    assert canonical("2*5+20", [2, 5, 20], 30) != canonical("20+5*2-0", [2, 5, 20, 0], 30)
    wrong_way = check_countdown_answer([20, 30], 10, "The answer is 20-30.")
    right_way = check_countdown_answer([20, 30], 10, "The answer is 30-20.")
    assert right_way.passed and not wrong_way.passed
    assert wrong_way.canonical != right_way.canonical


def test_check_many_matches_check():
    task = Countdown3(seed=0, options=SMALL)
    problems = task.problems("test")[:20]
    items = [(p, p["reference"]) for p in problems] + [(p, "The answer is 1+1.") for p in problems]
    verdicts = task.check_many(items)
    assert [v.passed for v in verdicts] == [True] * 20 + [False] * 20


def test_real_countdown_data_files_become_the_test_split(tmp_path):
    from harness.errors import BadInput
    from tasks import get_task

    rows = [
        {"nums": [44, 19, 35], "target": 98, "solution": ["44+19=63", "63+35=98"]},  # Stream-of-Search
        {"nums": [3, 5, 7], "target": 22, "solution": "3*5=15, 15+7=22"},
        {"nums": [2, 9, 40], "target": 22},  # TinyZero: no solution, evaluation only
        {"numbers": [6, 8, 11], "target": 37, "reference": "6*8=48. 48-11=37. The answer is 6*8-11."},  # ours
        # the official LaDiR release's text pairs: the numbers and target named in the question
        {"input": "Use the numbers [44, 19, 35] and basic arithmetic to make 98.",
         "output": "44 + 19 = 63. 63 + 35 = 98. The answer is 44 + 19 + 35."},
        {"input": "Numbers: 3 5 7\nTarget: 22", "output": "3*7=21. The answer is 21.",  # wrong output
         "solutions": ["3 + 5 = 8, 8 * 7 = 56", ["3*5=15", "15+7=22"]]},
        {"nums": [2, 9, 40], "target": 22, "solution": ["2+9=11", "11+40=51"]},  # valid steps, not the target
        {"input": "Reach 22 with [3, 5, 7].", "output": "", "solutions": "3*5=15. 15+7=22."},  # one string
    ]
    path = tmp_path / "cd3.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("countdown3", data_file=str(path), train_size=300, val_size=20)
    test = task.problems("test")
    assert [p["task_id"] for p in test] == [f"countdown3/test/{i}" for i in range(8)]
    assert test[0]["reference"] == "44+19=63. 63+35=98. The answer is 44+19+35."
    assert test[1]["reference"] == "3*5=15. 15+7=22. The answer is 3*5+7."
    assert "reference" not in test[2] and test[3]["reference"] == rows[3]["reference"]
    assert (test[4]["numbers"], test[4]["target"]) == ([44, 19, 35], 98)
    assert test[4]["reference"] == "44 + 19 = 63. 63 + 35 = 98. The answer is 44+19+35."
    assert (test[5]["numbers"], test[5]["target"]) == ([3, 5, 7], 22)
    assert test[5]["reference"] == "3*5=15. 15+7=22. The answer is 3*5+7."  # the first solution that checks
    assert "reference" not in test[6]
    assert test[7]["reference"] == "3*5=15. 15+7=22. The answer is 3*5+7."
    assert all(task.check(p, p["reference"]).passed for p in test if "reference" in p)
    file_keys = {(tuple(sorted(p["numbers"])), p["target"]) for p in test}
    assert not file_keys & {(tuple(sorted(p["numbers"])), p["target"]) for p in task.problems("train")}

    bad = tmp_path / "bad.jsonl"
    for content, needle in [('{"nums": [1, 2, 3, 4], "target": 10}\n', r"no row has the 3 numbers .*1 with 4"),
                            ('{"nums": "abc", "target": 10}\n', "not integers"),
                            ('{"input": "What is 2 + 2?", "output": "4"}\n', "cannot find the numbers and a target"),
                            ('{"input": "Make 24 from 1 2 3 4", "output": ""}\n', r"no row has the 3 numbers .*1 with 4")]:
        bad.write_text(content)
        with pytest.raises(BadInput, match=needle):
            get_task("countdown3", data_file=str(bad)).problems("test")
