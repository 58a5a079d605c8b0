"""`ladir-bench bench` runs end to end at a small scale (CI shows it works; the figures are not
asserted against their targets: timings belong to benchmarks, not tests)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.tools.bench import (
    KEYS,
    figures_table,
    matmul_peak_flops,
    training_flops_per_sequence,
)
from tests.conftest import micro_lm, run_cli


@pytest.mark.slow  # ~25 s of CPU: every figure's workload, even at scale 0.05
def test_bench_prints_every_figure_in_order_and_saves_the_report(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(["bench", "--device", "cpu", "--scale", "0.05", "--repeats", "1", "--json", "--out", str(out)])
    figures = json.loads(result.stdout)
    assert list(figures) == KEYS
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in figures.values())
    report = json.loads(out.read_text())
    assert report["figures"] == figures and set(report["targets"]) == set(KEYS)
    assert report["environment"]["device"] == "cpu" and "git_revision" in report["environment"]
    assert {"sampling", "mdm", "cache", "training", "checkers"} <= set(report["details"])
    assert report["details"]["mdm"]["gen_length"] == report["details"]["sampling"]["workload"]["completion_tokens"]
    assert report["details"]["sampling"]["workload"]["sentences"] >= 1
    table = figures_table(report)
    assert table.row_count == len(KEYS)


def test_flop_count_and_peak_are_sane():
    from harness.backbone import build_char_tokenizer

    tokenizer = build_char_tokenizer(["abc"])
    model = micro_lm(tokenizer)
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    weights = sum(p.numel() for p in model.parameters()) - (0 if tied else embedding)
    # 6 N per token for N multiplied weights, plus attention's 12 L d S
    assert training_flops_per_sequence(model, 10, 10) == 10 * (6 * weights + 12 * 2 * 32 * 10)
    assert matmul_peak_flops(torch.device("cpu"), size=256, repeats=1) > 1e6
