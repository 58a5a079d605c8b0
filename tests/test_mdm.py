"""Masked discrete diffusion: the 1/t-weighted loss on masked tokens only, bidirectional attention with
padding ignored, the confidence-ordered unmasking schedule, and a tiny train / eval through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from baselines.mdm import (
    MdmOptions,
    MdmSampleKnobs,
    block_plan,
    decode_target,
    diffusion_loss,
    encode_targets,
    join_rows,
    last_logits,
    prompt_ids,
    training_loss,
    unmasking_schedule,
    unmasking_steps,
)
from harness.backbone import MASK
from harness.config import build_dataclass
from harness.errors import BadInput
from harness.lm import IGNORE
from harness.sampling import RowNoise
from tests.conftest import micro_args, run_cli


def mask_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids(MASK)


# ---------------------------------------------------------------------------------------- sequences
def test_targets_are_padded_with_eos_and_cut_when_too_long(tokenizer):
    eos = tokenizer.eos_token_id
    targets, truncated = encode_targets(tokenizer, ["12", "123456"], gen_length=5)
    assert truncated == 1  # "123456</s>" does not fit in 5
    assert targets[0].tolist() == [*tokenizer.encode("12", add_special_tokens=False), eos, eos, eos]
    assert targets[1].tolist() == tokenizer.encode("12345", add_special_tokens=False)
    assert decode_target(tokenizer, targets[0]) == "12"
    ids, valid = join_rows(tokenizer, [prompt_ids(tokenizer, "Use 3"), prompt_ids(tokenizer, "U")], targets)
    assert ids.shape == (2, 6 + 5) and torch.equal(ids[:, -5:], targets)  # targets share the last columns
    assert valid[1].tolist() == [False] * 4 + [True] * 7 and bool(valid[0].all())
    with pytest.raises(BadInput):
        build_dataclass(MdmOptions, {"gen_length": 0}, "method_options")
    with pytest.raises(BadInput):
        build_dataclass(MdmSampleKnobs, {"temperature": -1}, "knob")


# --------------------------------------------------------------------------------------------- loss
def test_loss_counts_masked_target_tokens_only_weighted_one_over_t():
    torch.manual_seed(0)
    rows, question, length, vocab = 3, 4, 6, 11
    width = question + length
    logits = torch.randn(rows, width, vocab)
    clean = torch.randint(vocab, (rows, width))
    masked = torch.zeros(rows, width, dtype=torch.bool)
    masked[:, question:] = torch.rand(rows, length) < 0.5
    masked[:, question] = True  # every row has a masked token
    t = torch.tensor([0.2, 0.5, 0.9])
    loss = diffusion_loss(logits, clean.masked_fill(~masked, IGNORE), t, length)

    expected = 0.0
    for r in range(rows):
        for i in range(question, width):
            if masked[r, i]:  # position i-1 predicts token i
                expected += -F.log_softmax(logits[r, i - 1], -1)[clean[r, i]] / t[r]
    assert loss.item() == pytest.approx(float(expected) / (rows * length), rel=1e-5)

    # Logits that predict an unmasked token or a question token, and the clean tokens at unmasked
    # positions, do not enter the loss.
    unused = ~masked[:, 1:]
    other_logits = logits.clone()
    other_logits[:, :-1][unused] = torch.randn(int(unused.sum()), vocab) * 10
    other_logits[:, -1] = 5.0  # the last position predicts nothing
    other_clean = torch.where(masked, clean, torch.randint(vocab, clean.shape))
    assert diffusion_loss(other_logits, other_clean.masked_fill(~masked, IGNORE), t, length).item() == \
        pytest.approx(loss.item(), rel=1e-6)
    # Only the last K positions' logits are needed (training keeps K = L + 1).
    assert diffusion_loss(logits[:, -(length + 1):], clean.masked_fill(~masked, IGNORE), t, length).item() == \
        pytest.approx(loss.item(), rel=1e-6)


def test_training_masks_only_the_target_at_rate_t(tokenizer, model, monkeypatch):
    problems = [{"prompt": "Use 12 7 3 to make 57.\n", "reference": "12+7=19. The answer is 19."},
                {"prompt": "Use 3 to make 3.\n", "reference": "The answer is 3."}]
    seen = {}

    def spy(logits, labels, t, target_length):
        seen.update(labels=labels, t=t)
        return diffusion_loss(logits, labels, t, target_length)

    monkeypatch.setattr("baselines.mdm.diffusion_loss", spy)
    torch.manual_seed(0)
    loss, logs = training_loss(model, tokenizer, problems, gen_length=40, min_mask_rate=1e-3, device="cpu")
    assert loss.requires_grad and torch.isfinite(loss)
    labels, t = seen["labels"], seen["t"]
    assert bool((labels[:, :-40] == IGNORE).all()), "a question token entered the loss"
    assert 0 <= logs["mask_rate"] <= 1
    assert logs["mask_rate"] == pytest.approx(float((labels[:, -40:] != IGNORE).float().mean()))
    # Over many draws the masked fraction of a row follows its t.
    rates, ts = [], []
    for seed in range(30):
        torch.manual_seed(seed)
        training_loss(model, tokenizer, problems, gen_length=40, min_mask_rate=1e-3, device="cpu")
        rates.append((seen["labels"][:, -40:] != IGNORE).float().mean(1))
        ts.append(seen["t"])
    assert torch.cat(rates).sub(torch.cat(ts)).abs().mean() < 0.1


# ---------------------------------------------------------------------------------------- attention
def test_attention_is_bidirectional_and_ignores_padding(tokenizer, model):
    prompt = prompt_ids(tokenizer, "Use 12 7")
    target = torch.tensor([tokenizer.encode("12+7=19", add_special_tokens=False)])
    ids, valid = join_rows(tokenizer, [prompt], target)
    keep = target.size(1) + 1
    with torch.no_grad():
        base = last_logits(model, ids, valid, keep)
        later = ids.clone()
        later[0, -1] = tokenizer.convert_tokens_to_ids("5")
        changed = last_logits(model, later, valid, keep)
        # The first target position sees the last token; the causal model alone would not.
        assert not torch.allclose(base[0, 1], changed[0, 1], atol=1e-5)
        causal = model(input_ids=ids).logits[0, -keep + 1]
        assert torch.allclose(causal, model(input_ids=later).logits[0, -keep + 1], atol=1e-6)

        # Left padding (any token under it) leaves every real position's output unchanged.
        padded, padded_valid = join_rows(tokenizer, [prompt, [*prompt, *prompt[1:]]], target.expand(2, -1))
        assert bool((~padded_valid[0]).any())
        padded[0, ~padded_valid[0]] = tokenizer.convert_tokens_to_ids("9")
        assert torch.allclose(last_logits(model, padded, padded_valid, keep)[0], base[0], atol=1e-5)


# ----------------------------------------------------------------------------------------- sampling
def test_schedule_is_linear_and_blocks_split_the_steps():
    assert unmasking_schedule(10, 4) == [3, 2, 3, 2]
    assert unmasking_schedule(3, 5) == [1, 1, 0, 1, 0]
    for length, steps in [(96, 32), (7, 3), (5, 5), (1, 8)]:
        counts = unmasking_schedule(length, steps)
        assert len(counts) == steps and sum(counts) == length and max(counts) - min(counts) <= 1
    assert block_plan(12, 0, 5) == [(0, 12, 5)]
    assert block_plan(10, 4, 7) == [(0, 4, 3), (4, 8, 2), (8, 10, 2)]
    with pytest.raises(BadInput):
        block_plan(12, 4, 2)


def test_unmasking_commits_by_schedule_and_ends_with_no_mask(tokenizer, model):
    prompt, gen_length, steps, mask = prompt_ids(tokenizer, "Use 12 7 3"), 12, 5, mask_id(tokenizer)
    states = list(unmasking_steps(model, [prompt] * 3, gen_length, mask, steps, noise=RowNoise([0, 1, 2])))
    assert len(states) == steps
    masked = [(s == mask).sum(1) for s in states]
    remaining = gen_length
    for count, state_masked in zip(unmasking_schedule(gen_length, steps), masked):
        remaining -= count
        assert state_masked.tolist() == [remaining] * 3
    assert not bool((states[-1] == mask).any())
    for before, after in zip(states, states[1:]):  # committed tokens are never changed again
        kept = before != mask
        assert torch.equal(before[kept], after[kept])

    # Semi-autoregressive blocks: a block is finished before the next one is touched.
    blocked = list(unmasking_steps(model, [prompt] * 2, gen_length, mask, 6, block_length=4, noise=RowNoise([0, 1])))
    assert not bool((blocked[1][:, :4] == mask).any()) and bool((blocked[1][:, 4:] == mask).all())
    assert not bool((blocked[3][:, :8] == mask).any()) and bool((blocked[3][:, 8:] == mask).all())
    assert not bool((blocked[-1] == mask).any())


def test_sampling_is_reproducible(tokenizer, model):
    prompt, mask = prompt_ids(tokenizer, "Use 12 7 3"), mask_id(tokenizer)

    def final(seed, temperature, prompts=(prompt,) * 4):
        *_, last = unmasking_steps(model, list(prompts), 10, mask, 4, temperature,
                                   noise=RowNoise([seed + i for i in range(len(prompts))]))
        return last

    assert torch.equal(final(0, 0.0), final(1, 0.0))  # argmax: no randomness at all
    assert torch.equal(final(0, 0.0)[0], final(0, 0.0)[3])
    assert torch.equal(final(3, 1.0), final(3, 1.0))
    assert not torch.equal(final(3, 1.0), final(4, 1.0))
    # a row's sample is its own stream's: the same alone as beside another (left-padded) question
    other = prompt_ids(tokenizer, "Use 100 25 4 9 and more")
    assert torch.equal(final(3, 1.0, [prompt])[0], final(3, 1.0, [prompt, other])[0])


# -------------------------------------------------------------------------------------- end to end
def test_train_then_eval_through_the_cli(runs_dir):
    run_cli(["train", "--method", "mdm", "--task", "countdown3", "--run", "mdm", "--steps", "30",
             *micro_args("train.lr=3e-3", "method_options.gen_length=64")], runs_dir)
    phase = runs_dir / "mdm" / "mdm"
    log = [json.loads(line) for line in (phase / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31))
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert all(0 <= r["mask_rate"] <= 1 for r in log)
    assert json.loads((phase / "targets.json").read_text())["truncated"] == 0

    result = run_cli(["eval", "--run", "mdm", "--k", "2", "--limit", "3", "--steps", "4", "--json"], runs_dir)
    metrics = json.loads(result.stdout)
    assert metrics["n_problems"] == 3 and metrics["n_samples"] == 6 and metrics["knobs"]["steps"] == 4
    (metrics_file,) = (runs_dir / "mdm" / "results").rglob("metrics.json")
    assert json.loads(metrics_file.read_text())["method"] == "mdm"

    # A shorter generation length than the trained one is a sampling knob: the text ends within it (the
    # character tokenizer: a character a position), in a folder of its own; one past the model's is refused
    run_cli(["eval", "--run", "mdm", "--k", "2", "--limit", "3", "--steps", "4", "--knob", "gen_length=8"], runs_dir)
    (short,) = (runs_dir / "mdm" / "results").rglob("*gen_length8*/samples.jsonl")
    completions = [json.loads(line)["completion"] for line in short.read_text().splitlines()]
    assert len(completions) == 6 and max(map(len, completions)) <= 8
    refused = run_cli(["eval", "--run", "mdm", "--k", "2", "--limit", "3", "--knob", "gen_length=256"], runs_dir,
                      check=False)
    assert refused.returncode == 2 and "knob gen_length=256 leaves no room" in refused.stderr
