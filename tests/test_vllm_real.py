"""`--engine vllm` end to end on the real vLLM, wherever it is installed (its GPU build, or the CPU build
in a venv of its own, README "Sampling with vLLM"); skipped elsewhere, as in CI, whose lock has no vLLM.
`tests/test_vllm_engine.py` checks the same plumbing against a fake everywhere."""

from __future__ import annotations

import json

import pytest

from tests.conftest import micro_args, run_cli

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (README: Sampling with vLLM)")


@pytest.mark.slow
def test_a_trained_run_samples_through_vllm_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    # head_dim 32: vLLM's CPU attention has no kernel for the micro preset's 16
    run_cli(["train", "--method", "ar-sft", "--task", "countdown3", "--run", "x", "--steps", "4",
             *micro_args("model.hidden_size=64")], runs)
    args = ["eval", "--run", "x", "--k", "4", "--engine", "vllm", "--json"]

    first = run_cli([*args, "--limit", "3"], runs)
    metrics = json.loads(first.stdout)  # vLLM's own logs went to stderr
    assert metrics["engine"] == "vllm" and metrics["n_samples"] == 12 and metrics["engine_startup_s"] > 0
    (folder,) = (runs / "x" / "results" / "countdown3-test").glob("k4*_engine-vllm")
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [f"countdown3/test/{i}" for i in range(3) for _ in range(4)]
    assert all(isinstance(r["completion"], str) and isinstance(r["passed"], bool) for r in rows)
    assert json.loads((folder / "manifest.json").read_text())["engine"] == {"name": "vllm",
                                                                           "version": vllm.__version__}

    # a longer evaluation keeps the sampled problems and samples only the new one
    second = json.loads(run_cli([*args, "--limit", "4"], runs).stdout)
    longer = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert second["n_samples"] == 16 and longer[:12] == rows
