"""lm-evaluation-harness adapter: a micro run sampled through lm-eval on an exported harness task gives
`ladir-bench eval`'s samples, scored by the harness's checker; the CLI wrapper runs lm-eval's CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from harness.engines.lm_eval_adapter import (  # noqa: E402
    FILTER_NAME,
    LadirBenchLM,
    check_doc,
    context_task_id,
    cut_at_stops,
    export_tasks,
    main,
    run_task_spec,
)
from harness.errors import BadInput  # noqa: E402
from tests.conftest import micro_args, run_cli  # noqa: E402

TASK = "ladir_countdown3"
METRIC = f"exact_match,{FILTER_NAME}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, micro_base) -> dict:
    """A micro AR-SFT run on countdown3, its `ladir-bench eval` samples (k = 2, 3 problems), and the same
    3 problems exported as an lm-eval task with repeats 2."""
    base = tmp_path_factory.mktemp("lm_eval")
    runs = base / "runs"
    shutil.copytree(micro_base / "_base", runs / "_base")
    run_cli(["train", "--method", "ar-sft", "--task", "countdown3", "--run", "x", "--steps", "4",
             *micro_args("eval.max_new_tokens=16")], runs)
    metrics = json.loads(run_cli(["eval", "--run", "x", "--k", "2", "--limit", "3", "--json"], runs).stdout)
    assert metrics["n_samples"] == 6
    eval_samples: dict[str, list[str]] = {}
    (samples_file,) = (runs / "x" / "results").rglob("samples.jsonl")
    for line in samples_file.read_text().splitlines():
        record = json.loads(line)
        eval_samples.setdefault(record["task_id"], []).append(record["completion"])
    out = base / "lm_eval_tasks"  # not "tasks": a folder of that name in the cwd would shadow the harness's package
    task, seed, options = run_task_spec("x", runs)
    assert (task, seed) == ("countdown3", 0)
    (yaml_path,) = export_tasks([task], out, limit=3, seed=seed, task_options=options, repeats=2)
    assert yaml_path == out / TASK / f"{TASK}.yaml"
    return {"runs": runs, "out": out, "eval_samples": eval_samples}


def _evaluate(model, model_args, out: Path, limit: int = 3) -> dict:
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[TASK], limit=limit, log_samples=True,
                                   task_manager=TaskManager(include_path=str(out), include_defaults=False))


def _completions(results: dict) -> dict[str, list[str]]:
    samples = results["samples"][TASK]
    return {s["doc"]["task_id"]: s["resps"][0] for s in samples}


def test_simple_evaluate_gives_eval_samples_and_checker_metric(setup):
    results = _evaluate("ladir-bench", {"run": "x", "runs_dir": str(setup["runs"])}, setup["out"])
    metrics = results["results"][TASK]
    assert METRIC in metrics and 0.0 <= metrics[METRIC] <= 1.0
    assert results["n-samples"][TASK]["effective"] == 3
    completions = _completions(results)
    # every repeat is an independent sample: exactly `ladir-bench eval`'s k = 2 samples of the problem
    assert completions == setup["eval_samples"]
    assert any(a != b for a, b in completions.values())
    # the per-document metric is the checker's pass rate over the repeats
    for sample in results["samples"][TASK]:
        assert sample["exact_match"] == check_doc({"name": "countdown3", "seed": 0}, sample["doc"],
                                                  sample["filtered_resps"])["exact_match"]

    # deterministic: a second model instance (another batch size) draws the same samples
    model = LadirBenchLM(run="x", runs_dir=str(setup["runs"]), batch_size=1)
    again = _evaluate(model, None, setup["out"])
    assert _completions(again) == completions
    assert again["results"][TASK][METRIC] == metrics[METRIC]
    # another seed draws others
    other = LadirBenchLM(run="x", runs_dir=str(setup["runs"]), seed=1)
    assert _completions(_evaluate(other, None, setup["out"], limit=1))["countdown3/test/0"] != \
        completions["countdown3/test/0"]


def _request(context: str, doc: dict | None = None, **gen_kwargs) -> Instance:
    return Instance("generate_until", doc or {}, (context, {"until": [], **gen_kwargs}), 0, ("t", 0, 1))


def test_generate_until_repeats_stops_and_generation_kwargs(setup):
    model = LadirBenchLM(run="x", runs_dir=str(setup["runs"]))
    first = _request("Use 1 2 3 to make 6.\n")
    second = _request("Use 4 5 6 to make 15.\n")
    doc = {"task_id": "countdown3/test/0", "prompt": first.args[0]}
    # lm-eval sends `repeats` copies of one instance: each copy is another sample of the context
    out = model.generate_until([first, first, second, first, second, _request(first.args[0], doc)])
    again = model.generate_until([second, first, first, first, second])
    assert out[0] != out[1] and out[0] != out[3] and out[2] != out[4]
    assert [out[0], out[1], out[3]] == again[1:4] and [out[2], out[4]] == [again[0], again[4]]
    # the samples of a context are its samples under a task_id hashed from it; a harness document whose
    # prompt is the context keeps its own task_id (so they are `ladir-bench eval`'s)
    model.method.eval_seed = model.seed
    direct = model.method.sample([{"task_id": context_task_id(first.args[0]), "prompt": first.args[0]}, doc], 3,
                                 **model._resolve({}))
    assert direct[0] == [out[0], out[1], out[3]] and direct[1][0] == out[5]
    # stop strings cut, max_gen_toks caps the characters (character tokenizer), do_sample false is greedy
    stops = [_request(first.args[0], until=["a", "1", "."])] * 3
    short = [_request(first.args[0], max_gen_toks=5)] * 3
    greedy = [_request(first.args[0], do_sample=False)] * 3
    texts = model.generate_until([*stops, *short, *greedy])
    assert all(not any(s in text for s in "a1.") for text in texts[:3])
    assert all(len(text) <= 5 for text in texts[3:6])
    assert texts[6] == texts[7] == texts[8]
    assert cut_at_stops("abc. def", [".", "c"]) == "ab" and cut_at_stops("abc", []) == "abc"


def test_model_args_are_validated_and_likelihoods_unsupported(setup):
    with pytest.raises(BadInput, match="unknown option.*gamma_max.*max_new_tokens"):
        LadirBenchLM(run="x", runs_dir=str(setup["runs"]), gamma_max=0.3)
    with pytest.raises(BadInput, match="run=NAME"):
        LadirBenchLM(runs_dir=str(setup["runs"]))
    with pytest.raises(BadInput, match="no run named"):
        LadirBenchLM(run="missing", runs_dir=str(setup["runs"]))
    model = LadirBenchLM(run="x", runs_dir=str(setup["runs"]), temperature="0", max_new_tokens=4)
    assert model._resolve({"temperature": 1.0})["temperature"] == 0.0  # model_args win over the task's
    with pytest.raises(NotImplementedError, match="generate_until"):
        model.loglikelihood([])
    with pytest.raises(NotImplementedError, match="generate_until"):
        model.loglikelihood_rolling([])


def test_check_doc_scores_repeats_with_the_harness_checker():
    from tasks import get_task

    problem = get_task("countdown3").problems("test")[0]
    doc = {"task_id": problem["task_id"], "prompt": problem["prompt"], "problem": json.dumps(problem)}
    spec = {"name": "countdown3", "seed": 0, "options": {}}
    assert check_doc(spec, doc, [[problem["reference"], "The answer is 1."]]) == {"exact_match": 0.5}
    assert check_doc(spec, doc, [problem["reference"]]) == {"exact_match": 1.0}


def test_cli_export_and_lm_eval_wrapper(setup, tmp_path, capsys):
    out = tmp_path / "lm_eval_tasks"
    main(["export", "--run", "x", "--runs-dir", str(setup["runs"]), "--limit", "2", "--repeats", "2",
          "--out", str(out)])
    assert f"--include_path {out.resolve()} --tasks {TASK}" in capsys.readouterr().out
    env = {**os.environ, "LADIR_NO_PROGRESS": "1"}
    command = [sys.executable, "-m", "harness.engines.lm_eval_adapter", "--model", "ladir-bench", "--model_args",
               f"run=x,runs_dir={setup['runs']}", "--tasks", TASK, "--include_path", str(out),
               "--batch_size", "auto", "--device", "cpu", "--limit", "2", "--output_path", str(tmp_path / "results")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exact_match" in result.stdout and TASK in result.stdout
    # lm-eval's results table under its own header (pytablewriter 0.x, which pip picks beside
    # python-dateutil 4, labels the columns A, B, C, ...)
    header = [line for line in result.stdout.splitlines() if line.startswith("|")][:1]
    assert header and [cell.strip() for cell in header[0].strip("|").split("|")] == \
        ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"], result.stdout
    (written,) = (tmp_path / "results").rglob("results_*.json")
    assert METRIC in json.loads(written.read_text())["results"][TASK]
