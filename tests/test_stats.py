"""Error bars (harness.evaluate.stats): bootstrap intervals with known answers, paired comparisons,
seeds resampled, and per-problem figures that add up to the reported means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.errors import BadInput
from harness.evaluate.metrics import SampleResult, summarize
from harness.evaluate.score import metrics_of
from harness.evaluate.stats import Cell, cell, compare, format_cell, paired, per_problem, stderr_of_mean
from tests.conftest import run_cli


def write_eval(folder: Path, successes: list[list[bool]], split_seed: int = 0, chain: list[list[bool]] | None = None,
               counted: int | None = None) -> Path:
    """An eval results folder as `ladir-bench eval` leaves it: samples.jsonl (checked rows, problem by
    problem), manifest.json (what the task_ids name) and metrics.json (how many problems it scored)."""
    folder.mkdir(parents=True)
    rows = []
    for index, outcomes in enumerate(successes):
        for j, passed in enumerate(outcomes):
            row = {"task_id": f"countdown3/test/{index}", "completion": f"c{j}", "passed": passed, "answer": None,
                   "canonical": None, "reason": ""}
            if chain is not None:
                row["chain_valid"] = chain[index][j]
                row["uses_given_numbers"] = bool(j % 2)
            rows.append(row)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "manifest.json").write_text(json.dumps({"task": "countdown3", "split": "test", "seed": split_seed,
                                                      "config": {"task": "countdown3", "seed": split_seed,
                                                                 "task_options": {}}}))
    (folder / "metrics.json").write_text(json.dumps({"n_problems": counted or len(successes)}))
    return folder


def bernoulli(p: float, problems: int, samples: int, seed: int) -> list[list[bool]]:
    rng = np.random.default_rng(seed)
    return (rng.random((problems, samples)) < p).tolist()


def test_constant_data_gives_a_zero_width_interval(tmp_path):
    found = cell([write_eval(tmp_path / "a", [[True, False]] * 30)], "pass@1")
    assert found == Cell(0.5, 0.5, 0.5, 0.0, 30, 1)
    assert format_cell(found) == "50.0 [50.0, 50.0]"


def test_the_interval_has_the_width_the_normal_approximation_predicts(tmp_path):
    # 400 problems, one sample each, p = 0.3: the 95% interval is about +-1.96 sqrt(p(1-p)/n) = +-4.5 points
    folder = write_eval(tmp_path / "a", bernoulli(0.3, 400, 1, seed=1))
    found = cell([folder], "pass@1", n_boot=4000)
    values = per_problem(folder, "pass@1").to_numpy()
    assert found.stderr == pytest.approx(np.std(values, ddof=1) / np.sqrt(400))  # lm-eval's figure
    assert found.lo < found.mean < found.hi
    assert (found.hi - found.lo) == pytest.approx(2 * 1.96 * found.stderr, rel=0.15)
    assert cell([folder], "pass@1", n_boot=4000) == found, "seeded: the same interval every time"


def test_identical_methods_differ_by_zero_and_not_significantly(tmp_path):
    folder = write_eval(tmp_path / "a", bernoulli(0.4, 50, 4, seed=2))
    found = paired([folder], [folder], "pass@1")
    assert (found.diff, found.lo, found.hi, found.significant, found.n_problems) == (0.0, 0.0, 0.0, False, 50)


def test_a_large_difference_is_significant_and_a_small_noisy_one_is_not(tmp_path):
    strong = write_eval(tmp_path / "strong", bernoulli(0.8, 100, 4, seed=3))
    weak = write_eval(tmp_path / "weak", bernoulli(0.2, 100, 4, seed=4))
    found = paired([strong], [weak], "pass@1")
    assert found.significant and 0.5 < found.lo <= found.diff <= found.hi
    assert found.diff == pytest.approx(per_problem(strong).mean() - per_problem(weak).mean())
    # two draws of the same method on 20 problems: a difference the interval does not exclude 0 from
    same = paired([write_eval(tmp_path / "x", bernoulli(0.5, 20, 4, seed=5))],
                  [write_eval(tmp_path / "y", bernoulli(0.5, 20, 4, seed=6))], "pass@1")
    assert not same.significant and same.lo < 0 < same.hi


def test_pairing_narrows_the_interval_of_correlated_methods(tmp_path):
    """B is A with a few more problems solved: unpaired the two intervals overlap, paired the gain is real."""
    base = bernoulli(0.5, 200, 1, seed=7)
    better = [list(row) for row in base]
    for index in range(0, 200, 10):
        better[index] = [True]
    a, b = write_eval(tmp_path / "a", better), write_eval(tmp_path / "b", base)
    first, second = cell([a]), cell([b])
    assert first.lo < second.hi, "the separate intervals overlap"
    assert paired([a], [b]).significant


def test_seeds_are_resampled(tmp_path):
    """Two seeds, each constant over its own problems: problem resampling alone would give zero width;
    resampling the seeds gives every mixture from both-bad to both-good."""
    good = write_eval(tmp_path / "s0", [[True]] * 40, split_seed=0)
    bad = write_eval(tmp_path / "s1", [[False]] * 40, split_seed=1)
    found = cell([good, bad], "pass@1")
    assert (found.mean, found.lo, found.hi, found.n_problems, found.n_seeds) == (0.5, 0.0, 1.0, 80, 2)
    # two seeds evaluated on one problem set are crossed with its problems (40 problems, not 80)
    same_set = cell([good, write_eval(tmp_path / "s0b", [[False]] * 40, split_seed=0)], "pass@1")
    assert same_set.n_problems == 40 and (same_set.lo, same_set.hi) == (0.0, 1.0)


def test_paired_seeds_share_their_problem_sets_and_task_ids_of_other_splits_never_pair(tmp_path):
    a = [write_eval(tmp_path / f"a{s}", bernoulli(0.7, 30, 2, seed=10 + s), split_seed=s) for s in range(3)]
    b = [write_eval(tmp_path / f"b{s}", bernoulli(0.3, 30, 2, seed=20 + s), split_seed=s) for s in range(3)]
    found = paired(a, b)
    assert found.n_problems == 90 and found.significant
    assert found.diff == pytest.approx(np.mean([per_problem(x).mean() - per_problem(y).mean() for x, y in zip(a, b)]))
    # the same task_ids from another split seed name other problems: nothing to compare
    with pytest.raises(BadInput, match="no common problems"):
        paired([a[0]], [b[1]])


def test_per_problem_reproduces_summarize(tmp_path):
    successes, chain = bernoulli(0.35, 25, 10, seed=8), bernoulli(0.5, 25, 10, seed=9)
    folder = write_eval(tmp_path / "a", successes, chain=chain)
    results = [SampleResult(f"countdown3/test/{i}", f"c{j}", successes[i][j], None, None, None, chain[i][j], bool(j % 2))
               for i in range(25) for j in range(10)]
    metrics = summarize(results)
    for metric in ("pass@1", "pass@10", "chain_valid@1", "chain_valid@10", "uses_given_numbers"):
        series = per_problem(folder, metric)
        assert len(series) == 25 and series.index[0] == "countdown3/test/0"
        assert series.mean() == pytest.approx(metrics[metric]), metric
    assert metrics["uses_given_numbers"] == 0.5 and "chain_valid@10" in metrics


def test_per_problem_reads_the_problems_the_evaluation_scored(tmp_path):
    # samples.jsonl holds 10 problems from an earlier --limit 10; the last evaluation scored the first 6
    folder = write_eval(tmp_path / "a", [[True]] * 6 + [[False]] * 4, counted=6)
    assert per_problem(folder).tolist() == [1.0] * 6


def test_bad_metric_or_a_task_without_the_verdict_is_refused(tmp_path):
    folder = write_eval(tmp_path / "a", [[True]] * 3)
    with pytest.raises(BadInput, match="unknown metric"):
        per_problem(folder, "accuracy")
    with pytest.raises(BadInput, match="does not record 'chain_valid'"):
        per_problem(folder, "chain_valid@1")
    with pytest.raises(BadInput, match="no checked samples"):
        per_problem(tmp_path, "pass@1")


def test_metrics_carry_each_rate_interval_and_lm_eval_stderr():
    successes = bernoulli(0.4, 60, 5, seed=11)
    checked = [{"task_id": f"t{i}", "completion": "x", "passed": successes[i][j], "chain_valid": j < 2,
                "uses_given_numbers": True} for i in range(60) for j in range(5)]
    metrics = metrics_of(checked, None)
    assert set(metrics["intervals"]) == {"pass@1", "chain_valid@1", "uses_given_numbers", "diversity"}
    lo, hi = metrics["intervals"]["pass@1"]
    assert lo < metrics["pass@1"] < hi
    per_problem_rate = [np.mean(row) for row in successes]
    assert metrics["stderr"]["pass@1"] == pytest.approx(stderr_of_mean(np.array(per_problem_rate)))
    assert metrics["chain_valid@1"] == pytest.approx(0.4)
    assert metrics["intervals"]["chain_valid@1"] == pytest.approx([0.4, 0.4])  # 2 of 5 on every problem
    # a task without Countdown's verdicts: pass@k only
    plain = metrics_of([{k: v for k, v in row.items() if k in ("task_id", "completion", "passed")} for row in checked], None)
    assert set(plain["intervals"]) == {"pass@1", "diversity"} and "chain_valid@1" not in plain


def test_diversity_is_a_per_problem_count_of_distinct_correct_solutions_with_an_interval(tmp_path):
    # problem i has i distinct correct solutions among its 6 samples (one repeated), and a wrong one
    rows = []
    for i in range(5):
        canonicals = [f"s{j}" for j in range(i)] + ["s0"] * (5 - i)
        rows += [{"task_id": f"countdown3/test/{i}", "completion": c, "passed": i > 0, "answer": c, "canonical": c,
                  "reason": ""} for c in canonicals]
        rows.append({"task_id": f"countdown3/test/{i}", "completion": "bad", "passed": False, "answer": "bad",
                     "canonical": "bad", "reason": ""})
    folder = write_eval(tmp_path / "a", [[False]] * 5)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    series = per_problem(folder, "diversity")
    assert series.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    metrics = metrics_of(rows, None)
    assert metrics["diversity"] == pytest.approx(2.0) == series.mean()
    lo, hi = metrics["intervals"]["diversity"]
    assert 0.0 <= lo < 2.0 < hi <= 4.0
    found = cell([folder], "diversity")
    assert found.mean == pytest.approx(2.0) and format_cell(found, 2, 1.0).startswith("2.00 [")


def reporting(folder: Path, *metrics: str) -> Path:
    """`folder`'s metrics.json as `eval` leaves it, naming the figures it reports (values unread here)."""
    recorded = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**recorded, **{m: 0.0 for m in metrics}}))
    return folder


def test_compare_gives_each_shared_metric_both_cells_and_the_paired_difference(tmp_path):
    chain = [[j % 2 == 0 for j in range(4)]] * 40
    strong = [reporting(write_eval(tmp_path / f"s{s}", bernoulli(0.8, 40, 4, seed=30 + s), split_seed=s, chain=chain),
                        "pass@1", "pass@4", "chain_valid@1", "uses_given_numbers", "diversity", "distinct-2")
              for s in range(2)]
    weak = reporting(write_eval(tmp_path / "w", bernoulli(0.3, 40, 4, seed=40), split_seed=0, chain=chain),
                     "pass@1", "chain_valid@1", "diversity")
    rows = compare(strong, [weak])
    assert [r["metric"] for r in rows] == ["pass@1", "chain_valid@1", "diversity"], "what every evaluation reports"
    first = rows[0]
    assert Cell(**first["a"]) == cell(strong, "pass@1") and Cell(**first["b"]) == cell([weak], "pass@1")
    assert first["a_minus_b"]["n_problems"] == 40, "only seed 0's problem set is shared with B"
    assert first["a_minus_b"]["significant"] and first["a_minus_b"]["diff"] > 0.3
    assert rows[1]["a_minus_b"]["diff"] == 0.0 and not rows[1]["a_minus_b"]["significant"]
    # a metrics.json path stands for its evaluation; named metrics are computed even where not reported
    named = compare([strong[0] / "metrics.json"], [weak], ["pass@4"])
    assert [r["metric"] for r in named] == ["pass@4"] and named[0]["b"]["mean"] == pytest.approx(
        per_problem(weak, "pass@4").mean())


def test_compare_command_prints_the_difference_and_refuses_what_it_cannot_pair(tmp_path):
    a = reporting(write_eval(tmp_path / "a", bernoulli(0.9, 60, 2, seed=50)), "pass@1")
    b = reporting(write_eval(tmp_path / "b", bernoulli(0.1, 60, 2, seed=51)), "pass@1")
    lines = run_cli(["compare", str(a), "--against", str(b), "--json"]).stdout.splitlines()
    found = [json.loads(line) for line in lines]
    assert [row["metric"] for row in found] == ["pass@1"]
    assert found[0]["a_minus_b"] == {**found[0]["a_minus_b"], "significant": True, "n_problems": 60}
    text = run_cli(["compare", str(a), "--against", str(b)]).stdout
    assert "pass@1" in text and "*" in text
    other_split = reporting(write_eval(tmp_path / "c", bernoulli(0.1, 60, 2, seed=52), split_seed=1), "pass@1")
    alone = tmp_path / "copied" / "run.countdown4-test.k100.metrics.json"  # a metrics.json kept without its samples
    alone.parent.mkdir()
    alone.write_text((b / "metrics.json").read_text())
    for args, needle in ((["compare", str(a), "--against", str(other_split)], "no common problems"),
                         (["compare", str(a), "--against", str(tmp_path)], "no checked samples"),
                         (["compare", str(a), "--against", str(alone)], "no checked samples beside it"),
                         (["compare", str(a), "--against", str(b), "--metric", "pass@x"], "unknown metric")):
        refused = run_cli(args, check=False)
        assert refused.returncode == 2 and needle in refused.stderr and refused.stdout == "", (args, refused.stderr)
