"""`ladir-bench curve`: each checkpoint of a run evaluated as if training had stopped there. The last
checkpoint's row is what `eval` gives the finished run; an earlier one loads its own weights; a
LaDiR stage-1 checkpoint is sampled as stage 1 although stage 2 exists; a re-run evaluates nothing
twice; bad input is one line and exit code 2."""

from __future__ import annotations

import json

import harness.tools.curve as curve_module
from harness.jsonl import read_jsonl
from tests.conftest import copy_run, run_cli


def test_an_ar_curve_has_a_row_per_checkpoint_and_its_last_is_the_finished_runs_evaluation(
        tmp_path, ar_sft_micro, monkeypatch):
    runs = tmp_path / "runs"
    run_dir = copy_run(ar_sft_micro, "ar-sft", runs, "c")
    run_cli(["curve", "--run", "c", "--k", "2", "--limit", "3"], runs)
    folder = run_dir / "curve" / "val-k2-limit3"
    curve = json.loads((folder / "curve.json").read_text())
    assert [(row["phase"], row["step"]) for row in curve["rows"]] == [("sft", 4), ("sft", 8)]
    assert all(row["n_problems"] == 3 and row["n_samples"] == 6 for row in curve["rows"])
    assert all(0 <= row["step_valid"] <= 1 and row["samples"] == 6 for row in curve["rows"])  # countdown's steps
    # training compute up to each checkpoint, from the log: the last row's is the finished run's
    assert 0 < curve["rows"][0]["train_flops"] < curve["rows"][1]["train_flops"]
    assert list((runs / "_curves").iterdir()) == []  # the copies are gone

    run_cli(["eval", "--run", "c", "--k", "2", "--limit", "3", "--split", "val"], runs)
    samples = next((run_dir / "results").rglob("samples.jsonl"))
    finished = [r["completion"] for r in read_jsonl(samples)]
    figures = json.loads((samples.parent / "metrics.json").read_text())["step_figures"]  # eval reports them too
    assert figures["samples"] == 6 and figures["step_valid"] == curve["rows"][-1]["step_valid"]
    assert json.loads((samples.parent / "metrics.json").read_text())["train_flops"] == curve["rows"][-1]["train_flops"]
    assert [r["completion"] for r in read_jsonl(folder / "sft-step-8" / "samples.jsonl")] == finished
    assert [r["completion"] for r in read_jsonl(folder / "sft-step-4" / "samples.jsonl")] != finished

    # `table` over the runs folder lists the run's evaluation, not its checkpoints'; named, it reads them
    listed = run_cli(["table", str(runs)]).stdout
    assert listed.count("| c ") == 1, listed
    assert run_cli(["table", str(folder)]).stdout.count("| c-at-sft-") == 2

    def evaluated_twice(*args, **kwargs):
        raise AssertionError("a checkpoint already in the curve was evaluated again")

    monkeypatch.setattr(curve_module, "evaluate_checkpoint", evaluated_twice)
    run_cli(["curve", "--run", "c", "--k", "2", "--limit", "3"], runs)
    assert json.loads((folder / "curve.json").read_text()) == curve

    # each row carries its evaluation's 95% intervals; a row saved without them (an older curve file)
    # gets them back from its kept evaluation on a re-run, still evaluating nothing
    for row in curve["rows"]:
        lo, hi = row["intervals"]["pass@1"]
        assert lo <= row["pass@1"] <= hi
    older = {**curve, "rows": [{k: v for k, v in row.items() if k != "intervals"} for row in curve["rows"]]}
    (folder / "curve.json").write_text(json.dumps(older))
    run_cli(["curve", "--run", "c", "--k", "2", "--limit", "3"], runs)
    assert json.loads((folder / "curve.json").read_text()) == curve


def test_a_ladir_curve_over_both_stages_samples_each_stage_as_it_was(tmp_path, ladir_micro):
    runs = tmp_path / "runs"
    run_dir = copy_run(ladir_micro, "ladir", runs)
    out = tmp_path / "ladir.curve.json"
    run_cli(["curve", "--run", "ladir", "--phases", "stage1,stage2", "--k", "1", "--limit", "2", "--split", "test",
             "--out", str(out), "--knob", "steps=2"], runs)
    rows = json.loads(out.read_text())["rows"]
    assert [row["phase"] for row in rows] == ["stage1", "stage2"]
    kept = run_dir / "curve" / "test-k1-limit2_steps2"
    sampled = [json.loads((kept / folder / "metrics.json").read_text())["checkpoint"]
               for folder in ("stage1-step-2", "stage2-step-2")]
    assert [checkpoint["phase"] for checkpoint in sampled] == ["stage1", "stage2"]  # what each row sampled

    # stage 1 alone: stage 2 is left out of the copy, so stage 1 is what is sampled, not the finished stage 2
    run_cli(["curve", "--run", "ladir", "--phases", "stage1", "--k", "1", "--limit", "2", "--split", "test",
             "--knob", "steps=2", "--out", str(tmp_path / "stage1.curve.json")], runs)
    alone = json.loads((kept / "stage1-step-2" / "metrics.json").read_text())
    assert alone["checkpoint"]["phase"] == "stage1"


def test_bad_curve_requests_are_one_line_and_exit_code_2(tmp_path, ar_sft_micro, ladir_micro):
    runs = tmp_path / "runs"
    copy_run(ar_sft_micro, "ar-sft", runs, "c")
    run_cli(["curve", "--run", "c", "--k", "1", "--limit", "2", "--out", str(tmp_path / "c.json")], runs)
    for args, needle in [(["--run", "nope"], "no run named 'nope'"),
                         (["--run", "c", "--phases", "stage9"], "stages of run 'c' in training order (sft)"),
                         (["--run", "c", "--phases", "stage9", "--follow"], "in training order"),
                         (["--run", "c", "--k", "0"], "--k and --limit"),
                         (["--run", "c", "--k", "2", "--limit", "2", "--out", str(tmp_path / "c.json")],
                          "holds a curve of k 1, not 2")]:
        result = run_cli(["curve", *args], runs, check=False)
        assert result.returncode == 2 and needle in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    copy_run(ladir_micro, "ladir", runs)
    backwards = run_cli(["curve", "--run", "ladir", "--phases", "stage2,stage1"], runs, check=False)
    assert backwards.returncode == 2 and "vae, stage1, stage2" in backwards.stderr
