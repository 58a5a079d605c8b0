"""Countdown data published elsewhere, read as it is through `--data-file` (MGDM, d1, TinyZero,
Stream-of-Search), and the per-sample diagnostics of the Countdown checker (`chain_valid`,
`uses_given_numbers`)."""

from __future__ import annotations

import json

import pytest

from harness.errors import BadInput
from tasks import get_task
from tasks.base import Verdict
from tasks.countdown import DATA_FILE_SHAPES
from tests.conftest import run_cli


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _test_split(task_name, path):
    """The test split exactly as `--data-file PATH` builds it (the CLI passes the path as this option)."""
    return get_task(task_name, data_file=str(path)).problems("test")


# ---------------------------------------------------------------------------- data files


def test_mgdm_rows_give_numbers_target_and_a_checked_reference(tmp_path):
    # MGDM (HKUNLP/diffusion-vs-ar): input "numbers...,target", output the chain of steps.
    rows = [
        {"input": "44,19,35,2,196", "output": "44+19=63,63+35=98,98*2=196"},
        {"input": "30,100,93,2,46", "output": "100-93=7,30-7=23,23*2=46"},
        {"input": "44,19,35,2,98", "output": "44+19=63,63+35=98"},  # reaches the target without the 2
        {"input": "44,19,35,2,196", "output": "44+19=62,62+35=97,97*2=194"},  # wrong arithmetic
        {"input": "8,4,6,3,9", "output": "8/4=2,6+3=9,9*2=18"},  # valid steps, another value than the target
    ]
    test = _test_split("countdown4", _write_jsonl(tmp_path / "cd4_test.jsonl", rows))
    task = get_task("countdown4")
    assert [(p["numbers"], p["target"]) for p in test] == [
        ([44, 19, 35, 2], 196), ([30, 100, 93, 2], 46), ([44, 19, 35, 2], 98), ([44, 19, 35, 2], 196),
        ([8, 4, 6, 3], 9)]
    assert test[0]["prompt"] == "Use 44 19 35 2 to make 196.\n"
    assert test[0]["reference"] == "44+19=63. 63+35=98. 98*2=196. The answer is (44+19+35)*2."
    assert test[1]["reference"] == "100-93=7. 30-7=23. 23*2=46. The answer is (30-(100-93))*2."
    assert all("reference" not in p for p in test[2:])
    for problem in test[:2]:
        verdict = task.check(problem, problem["reference"])
        assert verdict.passed and verdict.chain_valid and verdict.uses_given_numbers


def test_d1_rows_are_test_only_problems(tmp_path):
    # d1 (dllm-reasoning/d1, dataset/countdown_cd3_test.jsonl): input the numbers, output the target.
    rows = [{"input": "30,100,93", "output": "23"}, {"input": "83, 18, 75", "output": 10}]
    test = _test_split("countdown3", _write_jsonl(tmp_path / "countdown_cd3_test.jsonl", rows))
    assert [(p["numbers"], p["target"]) for p in test] == [([30, 100, 93], 23), ([83, 18, 75], 10)]
    assert all("reference" not in p for p in test)
    assert get_task("countdown3").check(test[0], "100-93=7. 30-7=23. The answer is 30-(100-93).").passed


def test_tinyzero_parquet_with_mixed_sizes_keeps_the_task_size(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    # TinyZero's Countdown-Tasks-3to4: columns target and nums, 3 and 4 numbers mixed.
    frame = pd.DataFrame({"target": [98, 22, 37, 24, 196],
                          "nums": [[44, 19, 35], [3, 5, 7, 1], [6, 8, 11], [2, 3, 4, 1], [44, 19, 35, 2]]})
    path = tmp_path / "countdown_3to4.parquet"
    frame.to_parquet(path)

    three = _test_split("countdown3", path)
    warning = capsys.readouterr().err
    assert [(p["task_id"], p["numbers"], p["target"]) for p in three] == [
        ("countdown3/test/0", [44, 19, 35], 98), ("countdown3/test/2", [6, 8, 11], 37)]  # ids keep the row
    assert all(type(n) is int for p in three for n in [*p["numbers"], p["target"]])
    assert "reference" not in three[0]
    assert warning.count("\n") == 1 and warning.startswith("warning:")
    assert "skipped 3 of 5 rows" in warning and "3 with 4 numbers" in warning and str(path) in warning

    four = _test_split("countdown4", path)
    assert [p["task_id"] for p in four] == ["countdown4/test/1", "countdown4/test/3", "countdown4/test/4"]
    assert "skipped 2 of 5 rows" in capsys.readouterr().err

    # The same problems as prepared for TinyZero's verl training: the numbers and target in reward_model.
    verl = pd.DataFrame({"data_source": ["countdown"] * 2, "prompt": ["..."] * 2,
                         "reward_model": [{"style": "rule", "ground_truth": {"target": 98, "numbers": [44, 19, 35]}},
                                          {"style": "rule", "ground_truth": {"target": 37, "numbers": [6, 8, 11]}}]})
    verl.to_parquet(tmp_path / "train.parquet")
    assert [(p["numbers"], p["target"]) for p in _test_split("countdown3", tmp_path / "train.parquet")] == [
        ([44, 19, 35], 98), ([6, 8, 11], 37)]
    assert capsys.readouterr().err == ""  # nothing skipped, nothing said


def test_stream_of_search_jsonl_with_mixed_sizes(tmp_path, capsys):
    rows = [
        {"nums": [44, 19, 35], "target": 98, "solution": ["44+19=63", "63+35=98"]},
        {"nums": [44, 19, 35, 2], "target": 196, "solution": ["44+19=63", "63+35=98", "98*2=196"]},
        {"nums": [3, 5, 7], "target": 22, "solution": "3*5=15,15+7=22"},
        {"nums": [2, 9, 40], "target": 22},
    ]
    test = _test_split("countdown3", _write_jsonl(tmp_path / "sos.jsonl", rows))
    assert [p["task_id"] for p in test] == ["countdown3/test/0", "countdown3/test/2", "countdown3/test/3"]
    assert test[0]["reference"] == "44+19=63. 63+35=98. The answer is 44+19+35."
    assert test[1]["reference"] == "3*5=15. 15+7=22. The answer is 3*5+7."
    assert "reference" not in test[2]
    assert "skipped 1 of 4 rows" in capsys.readouterr().err


@pytest.mark.parametrize("row,reason", [
    ({"question": "Natalia sold clips to 48 of her friends.", "answer": "#### 72"}, "fields 'question', 'answer'"),
    ({"input": "What is 2 + 2?", "output": "4"}, "cannot find the numbers and a target"),
    ({"nums": [1, 2.5, 3], "target": 5}, "not integers"),
    ({"nums": "1,2,3", "target": 5}, "not integers"),
    ({"numbers": [1, 2, 3], "target": "five"}, "not integers"),
    ({"input": 17, "output": "4"}, "fields 'input', 'output'"),
])
def test_rows_in_no_known_shape_are_refused(tmp_path, row, reason):
    path = _write_jsonl(tmp_path / "other.jsonl", [{"nums": [44, 19, 35], "target": 98}, row])
    with pytest.raises(BadInput) as refused:
        _test_split("countdown3", path)
    message = str(refused.value)
    assert message.startswith(f"{path}: row 1 is not a Countdown problem (") and reason in message
    assert message.endswith(f"accepted rows: {DATA_FILE_SHAPES}") and "\n" not in message
    for source in ("TinyZero", "Stream-of-Search", "MGDM", "d1", "LaDiR"):
        assert source in DATA_FILE_SHAPES


def test_a_file_without_the_task_size_is_refused(tmp_path):
    path = _write_jsonl(tmp_path / "cd4.jsonl", [{"input": "44,19,35,2,196", "output": "44+19=63,63+35=98,98*2=196"}])
    with pytest.raises(BadInput, match=r"no row has the 3 numbers that task 'countdown3' takes \(rows: 1 with 4 numbers\)"):
        _test_split("countdown3", path)


def test_cli_data_reads_the_file_and_warns_or_refuses_in_one_line(tmp_path):
    mixed = _write_jsonl(tmp_path / "mixed.jsonl", [{"input": "30,100,93", "output": "23"},
                                                    {"input": "30,100,93,2", "output": "46"}])
    result = run_cli(["data", "--task", "countdown3", "--data-file", str(mixed)])
    problems = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(p["numbers"], p["target"]) for p in problems] == [([30, 100, 93], 23)]
    warning = (f"warning: {mixed}: skipped 1 of 2 rows whose count of numbers is not the 3 that task 'countdown3' "
               "takes (1 with 4 numbers)")
    assert result.stderr.strip().splitlines() == [warning]

    other = _write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "How many?", "answer": "#### 3"}])
    refused = run_cli(["data", "--task", "countdown3", "--data-file", str(other)], check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {other}: row 0 is not a Countdown problem")


# ---------------------------------------------------------------------------- checker diagnostics

PROBLEM = {"numbers": [12, 45, 67, 3], "target": 300}
CHAIN = "45+67=112. 112-12=100. 100*3=300."


@pytest.mark.parametrize("completion,passed,chain_valid,uses_given_numbers", [
    (f"{CHAIN} The answer is (45+67-12)*3.", True, True, True),
    (f"{CHAIN} The answer is 45+67-12+3.", False, True, True),  # the chain reached it, the answer did not
    (f"{CHAIN} The answer is (45+67-12)*2.", False, True, False),  # a number not given
    (f"{CHAIN} The answer is 300.", False, True, False),
    (f"{CHAIN}", False, True, False),  # no answer sentence: the chain still counts
    ("45+67=113. 113-12=101. The answer is (45+67-12)*3.", True, False, True),  # wrong arithmetic
    ("45+45=90. 90+67=157. The answer is (45+67-12)*3.", True, False, True),  # 45 used twice
    ("45+67=112. 112-12=100. The answer is (45+67-12)*3.", True, False, True),  # stops short of the target
    ("Let me think. 45+67=112. 112-12=100. 100*3=300. The answer is (45+67-12)*3.", True, False, True),
    ("The answer is (45+67-12)*3.", True, False, True),  # no reasoning at all
    ("The answer is (45+67-12)\t*3.", True, False, True),  # through the `ast` path
    ("The answer is 3*(45+67-12)/(12-12).", False, False, False),
    ("The answer is 2**3", False, False, False),  # outside the whitelist: the numbers are not read
    ("no answer", False, False, False),
])
def test_chain_valid_and_uses_given_numbers(completion, passed, chain_valid, uses_given_numbers):
    verdict = get_task("countdown4").check(PROBLEM, completion)
    assert (verdict.passed, verdict.chain_valid, verdict.uses_given_numbers) == (passed, chain_valid, uses_given_numbers)
    assert verdict.to_json()["chain_valid"] is chain_valid
    assert verdict.to_json()["uses_given_numbers"] is uses_given_numbers


def test_chain_valid_is_mgdms_criterion_not_the_answer_check():
    task = get_task("countdown4")
    problem = {"numbers": [10, 20, 30, 5], "target": 50}
    # The last step reaches the target with two of the four numbers: MGDM's criterion holds, the answer fails.
    verdict = task.check(problem, "20+30=50. The answer is 20+30.")
    assert verdict.chain_valid and not verdict.passed and verdict.uses_given_numbers is False
    assert task.chain_valid(problem, ["20+30=50."]) and not task.chain_valid(problem, [])
    assert task.chain_valid(problem, task.split_target("10+20=30. 30*5=150. 150/30=5.")[0]) is False  # 30 was used
    # A division by zero has no value, but the answer did use the numbers given.
    verdict = task.check({"numbers": [3, 3, 5], "target": 5}, "The answer is 5/(3-3).")
    assert not verdict.passed and verdict.uses_given_numbers and "division by zero" in verdict.reason


def test_generated_references_are_valid_chains():
    task = get_task("countdown5", test_size=50)
    for problem in task.problems("test"):
        verdict = task.check(problem, problem["reference"])
        assert verdict.passed and verdict.chain_valid and verdict.uses_given_numbers


def test_diagnostics_stay_out_of_other_tasks_verdicts():
    assert Verdict(True, "72", "72").to_json() == {"passed": True, "answer": "72", "canonical": "72", "reason": ""}
    assert Verdict(False, chain_valid=False).to_json()["chain_valid"] is False
