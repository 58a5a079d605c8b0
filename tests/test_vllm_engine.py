"""`ladir-bench eval --engine vllm`: the plumbing, checked against a fake `vllm` module.

The fake (written to a folder put on PYTHONPATH) implements just `LLM(model=..., seed=..., **kw).generate(
prompts, sampling_params)`, returning objects shaped like vLLM's `RequestOutput` (`.outputs[i].index / .text
/ .token_ids`), and `SamplingParams(**kw)`; it logs every argument and answers with planted completions.
So these tests check what reaches vLLM (the checkpoint folder, the HF engine's exact prompt tokens, n = k,
the knobs, the stop ids, the seeds) and what comes back (samples.jsonl rows, the checker, resumption, the
manifest, a results folder of its own). The real engine is untested here: it needs a GPU, which this
project's CI does not have.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import types
from pathlib import Path

import pytest

from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.engines.vllm_engine import MISSING, check_engine
from harness.errors import BadInput
from harness.methods import get_method_class
from harness.runs import create_run
from harness.sampling import problem_seed
from tests.conftest import MICRO_SETTINGS, copy_run, run_cli

FAKE_VLLM = '''
import json
import os
from dataclasses import dataclass

__version__ = "0.0.fake"


def _log(record):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as handle:
        handle.write(json.dumps(record) + "\\n")


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list


class LLM:
    def __init__(self, model, seed, **kwargs):
        import sys
        from transformers import AutoTokenizer

        # like vLLM's logger: to the stream VLLM_LOGGING_STREAM names, stdout by default
        stream = os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout")
        print("INFO fake vLLM engine started", file=sys.stdout if stream == "ext://sys.stdout" else sys.stderr)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        _log({"llm": {"model": model, "seed": seed, **kwargs}})

    def generate(self, prompts, sampling_params, use_tqdm=True):
        _log({"generate": [{"prompt_token_ids": p["prompt_token_ids"], "params": s.kwargs}
                           for p, s in zip(prompts, sampling_params)]})
        with open(os.environ["FAKE_VLLM_REPLIES"]) as handle:
            replies = json.load(handle)
        tok = self.tokenizer
        results = []
        for prompt, params in zip(prompts, sampling_params):
            texts = replies.get(tok.decode(prompt["prompt_token_ids"], skip_special_tokens=True), ["The answer is 0."])
            outputs = []
            for i in range(params.kwargs["n"]):
                text = texts[i % len(texts)]
                # the stop token, then text a stop must cut off
                ids = [*tok.encode(text, add_special_tokens=False), tok.eos_token_id,
                       *tok.encode("0+0", add_special_tokens=False)]
                outputs.append(CompletionOutput(i, text, ids))
            results.append(RequestOutput(prompt["prompt_token_ids"], outputs[::-1]))  # vLLM may reorder them
        return results
'''

# vLLM's CPU build when FAKE_VLLM_CPU=1, a GPU otherwise
FAKE_PLATFORMS = '''
import os


class _Platform:
    def is_cpu(self):
        return os.environ.get("FAKE_VLLM_CPU") == "1"


current_platform = _Platform()
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ar_sft_micro) -> dict:
    """A micro AR-SFT run on countdown3, and a folder holding the fake `vllm`."""
    base = tmp_path_factory.mktemp("vllm")
    runs = base / "runs"
    copy_run(ar_sft_micro, "ar-sft", runs, "x")
    fake = base / "fake"
    (fake / "vllm").mkdir(parents=True)
    (fake / "vllm" / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM))
    (fake / "vllm" / "platforms.py").write_text(FAKE_PLATFORMS)
    return {"runs": runs, "fake": fake, "base": base}


def _fake_env(trained: dict, replies: dict) -> tuple[dict, Path]:
    log = trained["base"] / "log.jsonl"
    log.unlink(missing_ok=True)
    replies_path = trained["base"] / "replies.json"
    replies_path.write_text(json.dumps(replies))
    path = os.pathsep.join(p for p in (str(trained["fake"]), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "FAKE_VLLM_LOG": str(log), "FAKE_VLLM_REPLIES": str(replies_path)}, log


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def test_without_vllm_the_engine_is_one_line_and_exit_2(trained):
    results = trained["runs"] / "x" / "results"
    before = sorted(results.rglob("*")) if results.exists() else []
    refused = run_cli(["eval", "--run", "x", "--k", "2", "--limit", "2", "--engine", "vllm"], trained["runs"],
                      check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: {MISSING}"
    assert (sorted(results.rglob("*")) if results.exists() else []) == before  # no results folder left behind


def test_ar_sft_through_the_fake_vllm(trained):
    from transformers import AutoTokenizer

    from harness.train.checkpoint import final_checkpoint
    from tasks import get_task

    runs = trained["runs"]
    checkpoint = final_checkpoint(runs / "x" / "sft")[1] / "model"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    options = load_config("tiny", None, [parse_override(s) for s in MICRO_SETTINGS]).task_options
    task = get_task("countdown3", seed=0, **options)
    problems = task.problems("test")[:3]
    # problem 0: one right completion of k = 2, and one wrong (problem 1's); the others: the fake's wrong default
    replies = {problems[0]["prompt"]: [problems[0]["reference"], problems[1]["reference"]]}
    env, log = _fake_env(trained, replies)
    knobs = ["--temperature", "0.7", "--knob", "top_p=0.9", "--knob", "max_new_tokens=20"]
    args = ["eval", "--run", "x", "--k", "2", *knobs, "--engine", "vllm", "--json"]

    metrics = json.loads(run_cli([*args, "--limit", "2"], runs, env=env).stdout)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    llm, generate = calls[0]["llm"], calls[1]["generate"]
    assert llm["model"] == str(checkpoint) and llm["seed"] == 0 and llm["dtype"] == "float32"
    assert llm["skip_tokenizer_init"] is True  # token ids in and out: only the run's tokenizer is used
    assert "enable_chunked_prefill" not in llm  # a GPU: vLLM's own scheduling
    # the HF engine's prompt: <s>, then the prompt's own tokens
    expected = [[tokenizer.bos_token_id, *tokenizer.encode(p["prompt"], add_special_tokens=False)] for p in problems]
    assert [r["prompt_token_ids"] for r in generate] == expected[:2]
    assert llm["max_model_len"] == max(len(ids) for ids in expected[:2]) + 20
    for request, problem in zip(generate, problems):
        assert request["params"] == {"n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 20,
                                     "seed": problem_seed(0, problem["task_id"]),
                                     "stop_token_ids": [tokenizer.eos_token_id]}

    folder = runs / "x" / "results" / "countdown3-test" / "k2_max_new_tokens20_temperature0.7_top_p0.9_engine-vllm"
    rows = _rows(folder)
    assert [r["task_id"] for r in rows] == [problems[0]["task_id"]] * 2 + [problems[1]["task_id"]] * 2
    # in index order, cut at the stop token, scored by the task's checker
    assert [r["completion"] for r in rows[:2]] == [problems[0]["reference"], problems[1]["reference"]]
    assert [r["passed"] for r in rows] == [True, False, False, False]
    assert metrics["pass@1"] == pytest.approx(0.25) and metrics["engine"] == "vllm"
    assert metrics["engine_startup_s"] >= 0  # timed apart from samples_per_s
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["engine"] == {"name": "vllm", "version": "0.0.fake"}

    # resumable: a longer evaluation samples only the problem not yet in samples.jsonl
    log.unlink()
    run_cli([*args, "--limit", "3"], runs, env=env)
    (generate,) = [json.loads(line)["generate"] for line in log.read_text().splitlines() if "generate" in line]
    assert [r["prompt_token_ids"] for r in generate] == expected[2:3]
    assert len(_rows(folder)) == 6
    # nothing left to sample: the engine is not started
    log.unlink()
    again = json.loads(run_cli([*args, "--limit", "3"], runs, env=env).stdout)
    assert not log.exists() and "engine_startup_s" not in again and again["n_samples"] == 6

    # the HF engine, same run and knobs: its own folder, the same row format, the engine in its manifest
    run_cli(["eval", "--run", "x", "--k", "2", *knobs, "--limit", "2"], runs)
    hf_folder = folder.with_name("k2_max_new_tokens20_temperature0.7_top_p0.9")
    # the same row format, but for the sampling compute, which only this process's forward passes can count
    compute = {"forward_tokens", "flops"}
    assert set(_rows(hf_folder)[0]) == set(rows[0]) | compute and not compute & set(rows[0])
    assert json.loads((hf_folder / "manifest.json").read_text())["engine"] == {"name": "hf"}
    assert "engine" not in json.loads((hf_folder / "metrics.json").read_text())


def test_on_vllms_cpu_build_prompts_are_never_split(trained):
    """vllm-cpu 0.32 fails a seeded request whose prompt was prefilled in chunks: the engine is built
    with chunked prefill off and a step budget that holds the longest prompt."""
    env, log = _fake_env(trained, {})
    env["FAKE_VLLM_CPU"] = "1"
    run_cli(["eval", "--run", "x", "--k", "2", "--limit", "1", "--seed", "7", "--engine", "vllm"], trained["runs"],
            env=env)
    llm = json.loads(log.read_text().splitlines()[0])["llm"]
    assert llm["enable_chunked_prefill"] is False
    assert llm["max_num_batched_tokens"] == max(llm["max_model_len"], 4096)


def test_methods_without_one_lm_are_refused(tmp_path, runs_dir):
    config = load_config("tiny", None, [parse_override(s) for s in MICRO_SETTINGS])
    config.method, config.task = "ladir", "countdown3"
    create_run(config, "l", runs_dir)  # untrained: the refusal comes before any weights are needed
    refused = run_cli(["eval", "--run", "l", "--k", "1", "--limit", "1", "--engine", "vllm"], runs_dir, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "'ladir'" in refused.stderr and "--engine vllm" in refused.stderr and "AR-based" in refused.stderr
    assert not (runs_dir / "l" / "results").exists()
    unknown = run_cli(["eval", "--run", "l", "--engine", "tgi"], runs_dir, check=False)
    assert unknown.returncode == 2 and "--engine must be one of hf, vllm" in unknown.stderr


def test_gguf_models_are_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    config = load_config("tiny", None, [parse_override(s) for s in MICRO_SETTINGS])
    config.method, config.task, config.model.name = "pretrained", "countdown3", "smollm2-135m"
    method = get_method_class("pretrained")(RunContext(config, tmp_path / "p", tmp_path))
    with pytest.raises(BadInput, match="does not load GGUF"):
        check_engine("vllm", method)
