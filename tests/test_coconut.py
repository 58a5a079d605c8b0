"""Coconut: the continuous-thought chain (post-norm hidden state fed back, gradients through it, KV cache
equal to full passes), the curriculum's stage layout and labels, left-padded batches equal to rows
alone, and a micro train / resume / eval through the CLI."""

from __future__ import annotations

import json
import time

import pytest
import torch

from baselines.coconut import (
    Coconut,
    ThoughtChain,
    coconut_loss,
    decode_after_thoughts,
    encode_prefixes,
    encode_thought_batch,
    stage_layout,
    start_thoughts,
)
from harness.backbone import EOT, build_char_tokenizer
from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.errors import BadInput
from harness.lm import IGNORE, next_token_loss
from harness.runs import create_run
from harness.sampling import draw_tokens
from tests.conftest import micro_args, micro_lm, run_cli

PROMPTS = ["Use 12 7 3 to make 57.\n", "Use 2 7 to make 9.\n", "Use 41 36 47 to make 30.\n"]
TEXTS = ["19*3=57. The answer is (12+7)*3.", "The answer is 2+7.", "47-41=6. 36-6=30. The answer is 36-(47-41)."]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer([*PROMPTS, *TEXTS])


@pytest.fixture
def model(tokenizer):
    return micro_lm(tokenizer)


# ---------------------------------------------------------------------------------- the chain
def test_each_thought_is_the_post_norm_hidden_state_of_the_previous_position(model, tokenizer):
    prefix_ids, prefix_mask = encode_prefixes(tokenizer, PROMPTS[:1])
    normed = []
    hook = model.model.norm.register_forward_hook(lambda module, args, output: normed.append(output[:, -1:]))
    with torch.no_grad():
        _, thoughts = start_thoughts(model, prefix_ids, prefix_mask, 3)
    hook.remove()
    # calls: the prefix, then one per thought; thought i is the final norm's output of the call before it
    assert len(normed) == 4
    for i in range(3):
        assert torch.equal(thoughts[:, i : i + 1], normed[i])

    # Cache correctness: T full passes without cache, each appending the last position's hidden state
    # as the next input embedding, give the same thoughts and the same logits after <EOT>.
    embed = model.get_input_embeddings()
    batch = encode_thought_batch(tokenizer, PROMPTS[:1], TEXTS[:1], 3, 256)
    with torch.no_grad():
        chain, cached = start_thoughts(model, batch.prefix_ids, batch.prefix_mask, 3)
        cached_logits = chain.append(inputs_embeds=embed(batch.suffix_ids)).logits
        sequence = embed(batch.prefix_ids)
        for _ in range(3):
            hidden = model(inputs_embeds=sequence, output_hidden_states=True).hidden_states[-1]
            sequence = torch.cat([sequence, hidden[:, -1:]], dim=1)
        full_logits = model(inputs_embeds=torch.cat([sequence, embed(batch.suffix_ids)], dim=1)).logits
    assert torch.allclose(sequence[:, -3:], cached, atol=1e-5)
    assert torch.allclose(full_logits[:, -batch.suffix_ids.size(1):], cached_logits, atol=1e-5)


def test_the_loss_backpropagates_through_the_whole_chain(model, tokenizer):
    batch = encode_thought_batch(tokenizer, PROMPTS, TEXTS, 3, 256)
    embed = model.get_input_embeddings()
    chain = ThoughtChain(model, len(PROMPTS), batch.prefix_ids.device)
    chain.append(inputs_embeds=embed(batch.prefix_ids), mask=batch.prefix_mask)
    # a leaf reachable only through the thoughts: added to the first thought's source
    source = torch.zeros_like(chain.last_hidden, requires_grad=True)
    chain.last_hidden = chain.last_hidden + source
    thoughts = chain.think(3)
    (last_grad,) = torch.autograd.grad(thoughts[:, -1].sum(), source, retain_graph=True)
    assert last_grad.abs().sum() > 0  # the third thought depends on the first: no detach in between
    logits = chain.append(inputs_embeds=embed(batch.suffix_ids), mask=batch.suffix_mask).logits
    next_token_loss(logits, batch.labels).backward()
    assert source.grad.abs().sum() > 0

    loss, logs = coconut_loss(model, batch)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert set(logs) == {"thought_norm", "thought_norm_ratio"} and logs["thought_norm"] > 0
    assert coconut_loss(model, encode_thought_batch(tokenizer, PROMPTS, TEXTS, 0, 256))[1] == {}


# ---------------------------------------------------------------------------------- curriculum
def test_stage_layout_and_labels(tokenizer):
    sentences, answer = ["a=1.", "b=2.", "c=3."], "The answer is 6."
    assert stage_layout(sentences, answer, 0, 3, 2) == (0, "a=1. b=2. c=3. The answer is 6.")
    assert stage_layout(sentences, answer, 1, 3, 2) == (2, "b=2. c=3. The answer is 6.")
    assert stage_layout(sentences, answer, 2, 3, 1) == (2, "c=3. The answer is 6.")
    assert stage_layout(sentences, answer, 3, 3, 1) == (3, "The answer is 6.")
    # fewer sentences than the stage: all removed, still s*c thoughts
    assert stage_layout(sentences[:1], answer, 2, 4, 1) == (2, "The answer is 6.")
    # the last stage removes everything even when it is below the number of sentences
    assert stage_layout(sentences, answer, 2, 2, 1) == (2, "The answer is 6.")

    batch = encode_thought_batch(tokenizer, PROMPTS[:2], TEXTS[:2], 2, 256)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    for row, (prompt, text) in enumerate(zip(PROMPTS[:2], TEXTS[:2])):
        prefix = batch.prefix_ids[row][batch.prefix_mask[row].bool()].tolist()
        assert tokenizer.decode(prefix) == f"<s>{prompt}<BOT>"
        suffix = batch.suffix_ids[row][batch.suffix_mask[row].bool()].tolist()
        assert suffix[0] == eot and suffix[-1] == tokenizer.eos_token_id
        labelled = [t for t in batch.labels[row].tolist() if t != IGNORE]
        assert labelled == suffix[1:]  # the text and </s>: never the question, <BOT>, thoughts or <EOT>
        assert tokenizer.decode(labelled, skip_special_tokens=True) == text
    assert batch.prefix_mask[1, 0] == 0 and batch.prefix_mask[:, -1].all()  # left-padded: <BOT> in the last column
    cut = encode_thought_batch(tokenizer, PROMPTS[:1], TEXTS[:1], 3, 40)
    assert cut.prefix_mask.sum() + 3 + cut.suffix_mask.sum() == 40


def test_left_padded_batch_equals_each_row_alone(model, tokenizer):
    batch = encode_thought_batch(tokenizer, PROMPTS, TEXTS, 2, 256)
    assert len(set(batch.prefix_mask.sum(-1).tolist())) == 3  # three prompt lengths
    embed = model.get_input_embeddings()
    with torch.no_grad():
        loss, _ = coconut_loss(model, batch)
        chain, thoughts = start_thoughts(model, batch.prefix_ids, batch.prefix_mask, 2)
        logits = chain.append(inputs_embeds=embed(batch.suffix_ids), mask=batch.suffix_mask).logits
        total, tokens = 0.0, 0
        for row in range(len(PROMPTS)):
            alone = encode_thought_batch(tokenizer, PROMPTS[row : row + 1], TEXTS[row : row + 1], 2, 256)
            row_chain, row_thoughts = start_thoughts(model, alone.prefix_ids, alone.prefix_mask, 2)
            row_logits = row_chain.append(inputs_embeds=embed(alone.suffix_ids)).logits
            assert torch.allclose(row_thoughts, thoughts[row : row + 1], atol=1e-5)
            assert torch.allclose(row_logits, logits[row : row + 1, : alone.suffix_ids.size(1)], atol=1e-5)
            row_loss, _ = coconut_loss(model, alone)
            count = int((alone.labels[:, 1:] != IGNORE).sum())
            total, tokens = total + float(row_loss) * count, tokens + count
    assert float(loss) == pytest.approx(total / tokens, abs=1e-5)


def test_decoding_shares_one_problems_thoughts_and_top_p(model, tokenizer):
    with torch.no_grad():
        chain, _ = start_thoughts(model, *encode_prefixes(tokenizer, PROMPTS[:1]), 2)
        chain.select(torch.tensor([0, 0, 0]))
        greedy = decode_after_thoughts(chain, tokenizer, 12, 0.0, 1.0)
        alone, _ = start_thoughts(model, *encode_prefixes(tokenizer, PROMPTS[:1]), 2)
        assert greedy == decode_after_thoughts(alone, tokenizer, 12, 0.0, 1.0) * 3
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    uniforms = torch.linspace(0, 0.999, 20)
    assert set(draw_tokens(logits.expand(20, -1), 1.0, uniforms, top_p=0.01).tolist()) == {1}  # the nucleus: top token
    assert int(draw_tokens(logits, 0.0)) == 1


def test_options_and_stages_are_validated(tmp_path):
    def coconut(**options):
        setting = "method_options={" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}"
        config = load_config("tiny", None, [parse_override("method=coconut"), parse_override(setting)])
        return Coconut(RunContext(config, tmp_path / "r", tmp_path))

    assert Coconut.stages == ("stage0", "stage1", "stage2", "stage3")
    method = coconut(max_stage=5)
    assert method.stages[-1] == "stage5"
    assert sum(method.stage_steps(s) for s in range(6)) == method.ctx.config.train.steps
    with pytest.raises(BadInput, match="stage9"):
        method.train(stage="stage9")
    # `train --stage` is checked against the run's own stages, before the run folder is written
    config = method.ctx.config
    assert create_run(config, "five", tmp_path, stage="stage5")[0].stages[-1] == "stage5"
    with pytest.raises(BadInput, match="stage9"):
        create_run(config, "nine", tmp_path, stage="stage9")
    assert not (tmp_path / "nine").exists()
    for bad in ({"thoughts_per_step": 0}, {"max_stage": -1}, {"val_problems": -1}):
        with pytest.raises(BadInput):
            coconut(**bad)


# ---------------------------------------------------------------------------------- end to end
def test_micro_train_resume_and_eval(runs_dir):
    # even: 2 steps a stage, so every stage trains at 8 steps (the reference split gives the CoT stages 0)
    args = ["train", "--method", "coconut", "--task", "countdown3", "--run", "cc", "--steps", "8",
            *micro_args("method_options.val_problems=5", "method_options.stage_budget=even")]
    started = time.time()
    first = run_cli(args, runs_dir)
    seconds = time.time() - started
    run_dir = runs_dir / "cc"
    curriculum = json.loads((run_dir / "curriculum.json").read_text())
    assert [r["stage"] for r in curriculum] == [0, 1, 2, 3]
    assert [r["thoughts"] for r in curriculum] == [0, 1, 2, 3]
    assert all(0 <= r["val_accuracy"] <= 1 and r["val_problems"] == 5 for r in curriculum)
    assert first.stderr.count("greedy val accuracy") == 4
    for stage in range(4):
        log = [json.loads(line) for line in (run_dir / f"stage{stage}" / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [1, 2]
        assert ("thought_norm" in log[-1]) == (stage > 0)
        assert stage == 0 or log[-1]["thought_norm_ratio"] > 0

    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "config.yaml"}
    again = run_cli(args, runs_dir)
    assert "greedy val accuracy" not in again.stderr and "resumed" not in again.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a finished run was redone"

    result = run_cli(["eval", "--run", "cc", "--k", "2", "--limit", "3", "--json"], runs_dir)
    metrics = json.loads(result.stdout)
    assert metrics["method"] == "coconut" and metrics["n_problems"] == 3 and metrics["n_samples"] == 6
    (out_dir,) = (run_dir / "results" / "countdown3-test").iterdir()
    assert (out_dir / "metrics.json").is_file()
    print(f"micro coconut train: {seconds:.1f}s")
