"""Compute accounting (harness.compute): the FLOPs formula on a model counted by hand, training tokens
equal to the batches' tokens, resumption that neither loses nor repeats any, sampling compute in
metrics.json, and chain_valid@k beside pass@k in `score --json`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.compute import ComputeCounter, _shape, call_flops
from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.lm import CachedSequence, encode_pairs
from harness.methods import get_method_class
from tasks import get_task
from tests.conftest import MICRO_SETTINGS, run_cli

# d = 32, d_ff = 64, 2 layers, vocabulary 40, untied head. Matmul parameters per layer: q, k, v, o
# 4 d^2 = 4096, MLP 3 d d_ff = 6144, two RMSNorms 2 d = 64; then the final norm d = 32 and the head
# V d = 1280; the input table (1280) is a lookup and does not count.
N = 2 * (4096 + 6144 + 64) + 32 + 1280
LAYERS, D_ATTN = 2, 32


def llama(tied: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=64, tie_word_embeddings=tied))


def counted(call) -> ComputeCounter:
    counter = ComputeCounter()
    with counter:
        call()
    return counter


def test_the_flops_formula_on_a_model_counted_by_hand():
    model = llama()
    assert sum(p.numel() for p in model.parameters()) == N + 1280 and _shape(model).matmul_params == N
    assert _shape(llama(tied=True)).matmul_params == N, "a tied head is the table, counted once"
    ids = torch.randint(0, 40, (2, 5))
    # forward only: 2 N per token + 4 n_layer d_attn C per token (C = 5 keys), over 10 tokens
    with torch.no_grad():
        inference = counted(lambda: model(input_ids=ids))
    assert inference.total.forward_tokens == 10 and inference.total.flops == 2 * N * 10 + 4 * LAYERS * D_ATTN * 10 * 5
    # trained: 6 N D + 12 n_layer d_attn D C, PaLM's count; the inner LlamaModel is not counted twice
    training = counted(lambda: model(input_ids=ids, labels=ids).loss.backward())
    assert training.total.flops == 6 * N * 10 + 12 * LAYERS * D_ATTN * 10 * 5
    # frozen, with a gradient flowing back to its input embeddings: no weight gradients
    model.requires_grad_(False)
    embeds = torch.randn(2, 5, 32, requires_grad=True)
    frozen = counted(lambda: model(inputs_embeds=embeds))
    assert frozen.total.flops == 4 * N * 10 + 12 * LAYERS * D_ATTN * 10 * 5
    assert call_flops(_shape(model), 2, 5, 5, gradient=False) == inference.total.flops


def test_padding_is_computed_but_not_counted_as_tokens_and_a_cache_widens_the_context():
    model = llama().eval()
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    with torch.no_grad():
        seq = CachedSequence(model, 2, "cpu")
        found = counted(lambda: (seq.append(input_ids=torch.ones(2, 4, dtype=torch.long), mask=mask),
                                 seq.append(input_ids=torch.ones(2, 1, dtype=torch.long))))
    assert found.total.forward_tokens == 6 + 2
    prefill = 2 * N * 8 + 4 * LAYERS * D_ATTN * 8 * 4
    step = 2 * N * 2 + 4 * LAYERS * D_ATTN * 2 * 5  # one new token per row attending to 5 keys
    assert found.total.flops == prefill + step


def micro_context(tmp_path, *extra: str) -> RunContext:
    config = load_config("tiny", None, [parse_override(o) for o in
                                        [*MICRO_SETTINGS, "method=ar-sft", "task=countdown3", *extra]])
    return RunContext(config, tmp_path / "runs" / "r", tmp_path / "runs")


def test_training_tokens_of_a_micro_ar_sft_run_are_its_batches_tokens_and_survive_a_resumption(tmp_path):
    ctx = micro_context(tmp_path, "train.steps=8")
    method = get_method_class("ar-sft")(ctx)
    method.train()
    tok, max_length = ctx.tokenizer, ctx.config.model.max_length
    shape = _shape(method.model)

    def expected(phase: str, steps: int, loss_on_prompt: bool) -> tuple[int, float]:
        tokens, flops = 0, 0.0
        for step in range(steps):
            problems = ctx.batch(phase, step)
            batch = encode_pairs(tok, [p["prompt"] for p in problems], [p["reference"] for p in problems],
                                 max_length, loss_on_prompt)
            tokens += int(batch["attention_mask"].sum())
            assert int(batch["attention_mask"].sum()) == ctx.tokens_in(problems)  # the phase's own count agrees
            rows, width = batch["input_ids"].shape
            flops += call_flops(shape, rows, width, width, gradient=True)
        return tokens, flops

    done = json.loads((ctx.run_dir / "sft" / "DONE").read_text())["last"]
    assert (done["forward_tokens"], done["flops"]) == pytest.approx(expected("sft", 8, False))
    base = json.loads((ctx.backbone.directory / "base" / "DONE").read_text())["last"]
    assert (base["forward_tokens"], base["flops"]) == pytest.approx(expected("base", 6, True))

    # Resumed from its step-4 checkpoint: the total is the uninterrupted run's, no step counted twice.
    sft = ctx.run_dir / "sft"
    (sft / "DONE").unlink()
    shutil.rmtree(sft / "checkpoints" / "step-0000008")
    get_method_class("ar-sft")(ctx).train()
    resumed = json.loads((sft / "DONE").read_text())["last"]
    assert (resumed["forward_tokens"], resumed["flops"]) == (done["forward_tokens"], done["flops"])

    # eval records the run's training compute (base + sft) and its sampling compute per sample
    from harness.evaluate.run import evaluate_run
    from harness.lm import prompt_ids

    method = get_method_class("ar-sft")(ctx)
    method.load()
    metrics, out_dir = evaluate_run(method, ctx, ctx.task, "test", 2, 3, {"max_new_tokens": 12})
    trained = metrics["train_compute"]
    assert set(trained["phases"]) == {"base", "sft"} and "6 N D" in trained["formula"]
    assert metrics["train_tokens"] == done["forward_tokens"] + base["forward_tokens"]
    assert metrics["train_flops"] == pytest.approx(done["flops"] + base["flops"])
    rows = [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]
    assert all(r["flops"] > 0 for r in rows)
    assert metrics["sample_tokens"] == pytest.approx(sum(r["forward_tokens"] for r in rows) / len(rows), abs=0.01)
    # AR: each distinct prompt read once (its 2 samples share the cache), then at most 12 written tokens
    prompt = sum(len(prompt_ids(tok, p["prompt"])) for p in ctx.task.problems("test")[:3]) / 6
    assert prompt < metrics["sample_tokens"] <= prompt + 12
    assert metrics["sample_flops"] >= 2 * shape.matmul_params * metrics["sample_tokens"]

    # greedy: one argmax decode per problem, a row of its own in the table
    greedy, greedy_dir = evaluate_run(method, ctx, ctx.task, "test", 1, 3, {"max_new_tokens": 12, "temperature": 0})
    assert greedy_dir != out_dir and greedy["knobs"]["temperature"] == 0 and "chain_valid@1" in greedy
    from harness.evaluate.report import load_frame, render_table

    frame = load_frame([out_dir / "metrics.json", greedy_dir / "metrics.json"])
    assert sorted(frame["decode"]) == ["greedy", "sampled"]
    table = render_table(frame, "markdown")
    lo, hi = greedy["intervals"]["pass@1"]
    assert f"[{100 * lo:.1f}, {100 * hi:.1f}]" in table
    assert "[" not in render_table(frame, "markdown", intervals=False).split("\n", 2)[2]
    from harness.evaluate.report import plot

    assert plot(frame, "compute", tmp_path / "compute.png").stat().st_size > 1000


def test_chain_valid_at_k_in_score_json_for_a_hand_written_countdown_file(tmp_path):
    problems = get_task("countdown3").problems("test")[:2]
    first, second = problems
    samples = [
        (first, first["reference"]),  # right: the steps and the answer
        (first, first["reference"].split("The answer is")[0] + "The answer is 1+2."),  # steps right, answer not
        (first, "The answer is 3."),  # nothing right, no numbers copied
        (first, first["reference"]),
        (second, "12+7=19. The answer is 5."),  # an invalid step
        (second, second["reference"]),
        (second, second["reference"]),
        (second, "no answer at all"),
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": c}) + "\n" for p, c in samples))
    metrics = json.loads(run_cli(["score", "--task", "countdown3", "--samples", str(path), "--k", "1,2", "--json"]).stdout)
    # problem 1: 2 of 4 pass, 3 of 4 chains valid; problem 2: 2 of 4 pass, 2 of 4 chains valid
    assert metrics["pass@1"] == pytest.approx(0.5)
    assert metrics["chain_valid@1"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert metrics["chain_valid@2"] == pytest.approx((1.0 + (1 - 1 / 6)) / 2)  # 1 - C(2,2)/C(4,2) on problem 2
    assert metrics["uses_given_numbers"] == pytest.approx(4 / 8)
    assert set(metrics["intervals"]) == {"pass@1", "pass@2", "chain_valid@1", "chain_valid@2", "uses_given_numbers",
                                         "diversity"}
    verdicts = [json.loads(line) for line in (tmp_path / "samples.verdicts.jsonl").read_text().splitlines()]
    assert [v["chain_valid"] for v in verdicts] == [True, True, False, True, False, True, True, False]
