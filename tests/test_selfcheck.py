"""`ladir-bench selfcheck`: every check reported as pass / fail / skipped with a reason or a one-line
error, one failure never stopping the others, the exit code; the whole run on the CPU (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.config import load_config, parse_override
from harness.errors import BadInput
from harness.methods import method_names
from harness.tools import selfcheck
from tests.conftest import MICRO_SETTINGS, run_cli


def _report(result) -> dict:
    report = json.loads(result.stdout)
    assert set(report) >= {"device", "ok", "counts", "seconds", "checks", "environment"}
    assert sum(report["counts"].values()) == len(report["checks"])
    for check in report["checks"]:
        assert check["status"] in ("pass", "fail", "skipped") and check["seconds"] >= 0
        assert check["detail"].strip() and "\n" not in check["detail"], check  # a reason for every skip, one line
    return report


def test_the_micro_preset_is_the_tests_micro_settings():
    micro = load_config("micro").to_dict()
    tests = load_config("tiny", None, [parse_override(s) for s in MICRO_SETTINGS]).to_dict()
    assert micro["model"] == tests["model"] and micro["task_options"] == tests["task_options"]
    for section, own in (("train", "steps"), ("eval", "k")):  # the tests pass these per test
        assert {k: v for k, v in micro[section].items() if k != own} == \
            {k: v for k, v in tests[section].items() if k != own}, section


def test_skips_give_their_reason_and_a_failure_its_error_in_one_line_and_exit_1(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_cli(["selfcheck", "--device", "cpu", "--only", "fsdp,pretrained,fp16", "--model", str(missing),
                      "--json", "--runs-dir", str(tmp_path / "kept")], check=False)
    assert result.returncode == 1
    report = _report(result)
    assert not report["ok"] and report["device"] == "cpu" and report["counts"] == {"pass": 0, "fail": 1, "skipped": 2}
    # in the order they run, whatever the order asked
    assert [(c["check"], c["status"]) for c in report["checks"]] == [
        ("pretrained", "fail"), ("fp16", "skipped"), ("fsdp", "skipped")]
    pretrained, fp16, fsdp = (c["detail"] for c in report["checks"])
    assert pretrained == f"BadInput: model directory not found: {missing}"
    assert "needs a GPU" in fp16 and "refused by design" in fsdp
    (log,) = (tmp_path / "kept").glob("selfcheck-*/logs/pretrained.log")  # the traceback, kept
    assert "Traceback" in log.read_text() and report["runs"] == str(log.parent.parent)


def test_unknown_checks_and_a_missing_gpu_are_bad_input():
    with pytest.raises(BadInput, match=r"unknown check\(s\) warp-drive \(known: ar-sft, "):
        selfcheck.select("ar-sft,warp-drive")
    with pytest.raises(BadInput, match="--device must be one of auto, cpu, cuda"):
        selfcheck.resolve("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="--device cuda: CUDA is not available on this machine"):
            selfcheck.resolve("cuda")


def test_one_failing_check_does_not_stop_the_others(tmp_path, monkeypatch):
    def broken(machine):
        print("partial output")
        raise ValueError("the kernel is missing\nsecond line")

    def fine(machine):
        return f"ran on {machine.device}"

    monkeypatch.setitem(selfcheck.FEATURES, "broken", broken)
    monkeypatch.setitem(selfcheck.FEATURES, "fine", fine)
    seen = []
    report = selfcheck.run_selfcheck("cpu", "fine,broken", tmp_path, on_outcome=seen.append)
    assert [(c["check"], c["status"], c["detail"]) for c in report["checks"]] == [
        ("broken", "fail", "ValueError: the kernel is missing"), ("fine", "pass", "ran on cpu")]
    assert [o.check for o in seen] == ["broken", "fine"] and not report["ok"]
    log = (Path(report["runs"]) / "logs" / "broken.log").read_text()
    assert "partial output" in log and "ValueError: the kernel is missing" in log


def test_the_error_line_of_a_launch_is_the_one_that_names_the_error():
    torchrun = ("[rank0]: Traceback (most recent call last):\nValueError: bad shape\n"
                "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n=====\nroot cause:\n  time: now")
    assert selfcheck.error_line(torchrun) == "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:"
    assert selfcheck.error_line("loading\nerror: run 'x' is not trained yet\n") == "error: run 'x' is not trained yet"
    assert selfcheck.error_line("just\nlines\n") == "lines"


@pytest.mark.slow
def test_the_whole_selfcheck_passes_on_the_cpu():
    result = run_cli(["selfcheck", "--device", "cpu", "--json"], check=False)
    report = _report(result)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert result.returncode == 0 and report["ok"] and not failed, failed
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert list(statuses) == list(selfcheck.all_checks())
    trained = [name for name in method_names() if name != "pretrained"]
    assert all(statuses[name] == "pass" for name in [*trained, "bf16", "gradient-checkpointing", "2-process", "bench"])
    assert statuses["fsdp"] == statuses["fp16"] == "skipped"
