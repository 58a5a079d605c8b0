"""Batched sampling across problems: every method's sample i of a problem depends only on (seed,
task_id, i), whatever the batch size and whichever problems share the call."""

from __future__ import annotations

import pytest
import torch

from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.lm import CachedSequence, pad_ids, sample_completions, write_tokens
from harness.methods import get_method_class
from harness.sampling import RowNoise, batches, draw_tokens, trajectories
from tests.conftest import MICRO_SETTINGS
from tests.test_pretrained import _model_dir

# Knobs that keep each method's untrained sampling short; LaDiR's include diversity guidance, which
# couples a problem's samples (they must then share a batch).
KNOBS = {
    "ar-sft": {"max_new_tokens": 12},
    "mtp": {"max_new_tokens": 12},
    "pretrained": {"max_new_tokens": 12},
    "coconut": {"max_new_tokens": 12},
    "mdm": {"steps": 4},
    "ld4lg": {"steps": 3},
    "ladir": {"steps": 3, "max_blocks": 3, "max_answer_tokens": 8, "gamma_max": 0.5, "init_noise": 2.0},
}
OPTIONS = {"mdm": "method_options={gen_length: 12}", "ld4lg": "method_options={max_text_tokens: 12}",
           "ladir": "method_options={max_sentence_tokens: 8}"}


def untrained(name: str, tmp_path):
    """The method with freshly initialised weights in place of trained ones (sampling needs no training)."""
    overrides = [f"method={name}", *MICRO_SETTINGS] + ([OPTIONS[name]] if name in OPTIONS else [])
    config = load_config("tiny", None, [parse_override(o) for o in overrides])
    if name == "pretrained":  # a model directory, as a user passes with --model
        config.task, config.model.name = "countdown3", str(_model_dir(tmp_path))
    ctx = RunContext(config, tmp_path / name, tmp_path)
    method = get_method_class(name)(ctx)
    method.load_untrained()
    return method


@pytest.mark.parametrize("name", list(KNOBS))
def test_samples_depend_on_seed_task_and_index_only(name, tmp_path):
    torch.manual_seed(0)
    method = untrained(name, tmp_path)
    problems = method.ctx.task.problems("test")[:5]
    knobs = KNOBS[name]
    with torch.no_grad():
        by_batch = {size: method.sample(problems, 3, batch_size=size, **knobs) for size in (1, 7, 100)}
        assert by_batch[1] == by_batch[7] == by_batch[100]
        assert all(len(c) == 3 for c in by_batch[100]) and len(by_batch[100]) == 5
        # whichever problems share the call: one problem alone, or in another order
        assert method.sample(problems[2:3], 3, batch_size=7, **knobs) == by_batch[7][2:3]
        assert method.sample(problems[::-1], 3, batch_size=100, **knobs) == by_batch[100][::-1]
        # the global generator plays no part
        torch.manual_seed(123)
        assert method.sample(problems, 3, batch_size=7, **knobs) == by_batch[7]
        # the samples are random: another evaluation seed draws others, and a problem's samples differ
        method.eval_seed += 1
        assert method.sample(problems, 3, batch_size=100, **knobs) != by_batch[100]
    if name != "coconut":  # Coconut's continuous thoughts are deterministic; only its answer text is sampled
        assert any(len(set(c)) > 1 for c in by_batch[100])
    # Determinism: a second instance built under the same seed samples exactly the same
    torch.manual_seed(0)
    twin = untrained(name, tmp_path / "twin")
    with torch.no_grad():
        assert twin.sample(problems, 3, batch_size=100, **knobs) == by_batch[100]


def test_batches_fill_across_problems_and_keep_whole_problems_together():
    problems = [{"task_id": f"t/{i}"} for i in range(5)]
    rows = trajectories(problems, 3, seed=0)
    assert [len(b) for b in batches(rows, 7)] == [7, 7, 1]
    whole = list(batches(rows, 7, whole_problems=True))
    assert [len(b) for b in whole] == [6, 6, 3]
    assert all(len({r.problem for r in b if r.problem == p}) in (0, 1) for b in whole for p in range(5))
    assert [len(b) for b in batches(trajectories(problems[:2], 10, 0), 4, whole_problems=True)] == [10, 10]
    seeds = [r.seed for r in rows]
    assert len(set(seeds)) == len(seeds)  # every trajectory its own stream
    assert trajectories(problems, 5, seed=0)[:3] == rows[:3]  # index-stable: more samples extend, never reshuffle


def test_inverse_cdf_draws_follow_the_distribution_and_the_nucleus():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    probs = torch.softmax(logits, -1)[0]
    uniforms = (torch.arange(20000) + 0.5) / 20000  # a uniform grid: frequencies equal the probabilities
    drawn = draw_tokens(logits.expand(len(uniforms), -1), 1.0, uniforms)
    frequencies = torch.bincount(drawn, minlength=4).float() / len(uniforms)
    assert torch.allclose(frequencies, probs, atol=1e-3)
    # temperature sharpens; top-p keeps the smallest set reaching p, renormalised
    cold = torch.bincount(draw_tokens(logits.expand(len(uniforms), -1), 0.5, uniforms), minlength=4).float()
    assert cold[2] / len(uniforms) > probs[2]
    nucleus = draw_tokens(logits.expand(len(uniforms), -1), 1.0, uniforms, top_p=0.8)
    assert set(nucleus.tolist()) == {1, 2}  # p(2) = 0.66 < 0.8 <= p(2) + p(1)
    assert float((nucleus == 2).float().mean()) == pytest.approx(float(probs[2] / (probs[1] + probs[2])), abs=1e-3)
    assert draw_tokens(logits, 0.0).tolist() == [2]
    with pytest.raises(ValueError):
        draw_tokens(logits, 1.0)


def test_row_noise_streams_are_independent_of_the_batch():
    together = RowNoise([11, 22, 33]).normal(2, 3)
    assert torch.equal(RowNoise([22]).normal(2, 3)[0], together[1])
    noise = RowNoise([11, 22])
    assert not torch.equal(noise.stream("answer").uniform(4), noise.stream("blocks").uniform(4))
    assert torch.equal(RowNoise([22]).stream("answer").uniform(4)[0], noise.stream("answer").uniform(4)[1])


def test_cached_sequence_compaction_and_padding_match_rows_alone(tmp_path):
    """`sample_completions` drops finished rows mid-batch; every row still writes what it would alone."""
    method = untrained("ar-sft", tmp_path)
    model, tok = method.model, method.ctx.tokenizer
    prompts = [p["prompt"] for p in method.ctx.task.problems("test")[:4]]
    with torch.no_grad():
        batch = sample_completions(model, tok, prompts, RowNoise([1, 2, 3, 4]), 1.0, 1.0, 20)
        alone = [sample_completions(model, tok, [p], RowNoise([s]), 1.0, 1.0, 20)[0] for p, s in zip(prompts, [1, 2, 3, 4])]
        assert batch == alone

        # stops that rows hit at different steps: the batch is compacted several times on the way
        stops = list(range(0, len(tok), 9))

        def written(rows_prompts, seeds):
            ids, mask = pad_ids([[tok.bos_token_id, *tok.encode(p, add_special_tokens=False)] for p in rows_prompts],
                                tok.pad_token_id, left=True, device="cpu")
            seq = CachedSequence(model, len(rows_prompts), "cpu")
            logits = seq.append(input_ids=ids, mask=mask, all_logits=False).logits[:, -1]
            return write_tokens(seq, logits, RowNoise(seeds), 1.0, 1.0, 30, stops)

        seeds = list(range(8))
        together = written(prompts * 2, seeds)
        assert len({len(row) for row in together}) > 2  # rows finished at different steps
        assert together == [written([p], [s])[0] for p, s in zip(prompts * 2, seeds)]
        assert not any(t in stops for row in together for t in row)
        # a left-padded row's logits equal its own, unpadded
        rows = [[tok.bos_token_id, *tok.encode(p, add_special_tokens=False)] for p in prompts[:2] + ["x"]]
        ids, mask = pad_ids(rows, tok.pad_token_id, left=True, device="cpu")
        padded = CachedSequence(model, 3, "cpu").append(input_ids=ids, mask=mask, all_logits=False).logits[:, -1]
        single = CachedSequence(model, 1, "cpu").append(input_ids=torch.tensor([rows[2]]), all_logits=False).logits[:, -1]
        assert torch.allclose(padded[2], single[0], atol=1e-5)


@pytest.mark.parametrize("name", ["ladir", "ld4lg"])
def test_a_flow_model_started_at_the_noise_mode_decodes_deterministically(name, tmp_path):
    # init_noise 0 (and the answer at temperature 0): every sample of a problem is the same text, whatever
    # the seed: the greedy decode a table reports as its own row kind
    method = untrained(name, tmp_path)
    problems = method.ctx.task.problems("test")[:2]
    knobs = {**KNOBS[name], "init_noise": 0.0, **({"temperature": 0.0, "gamma_max": 0.0} if name == "ladir" else {})}
    with torch.no_grad():
        first = method.sample(problems, 3, **knobs)
        method.eval_seed += 1
        assert method.sample(problems, 3, **knobs) == first
    assert all(len(set(samples)) == 1 for samples in first)
    with pytest.raises(Exception, match="init_noise >= 0"):
        method.sample(problems, 1, **{**knobs, "init_noise": -1.0})


def test_a_decode_is_greedy_only_when_nothing_is_sampled():
    from harness.evaluate.report import decode_kind

    assert decode_kind(0.0, float("nan")) == "greedy"  # AR at temperature 0
    assert decode_kind(0.0, 0.0) == "greedy"  # LaDiR: answer argmax, latents from the noise's mode
    assert decode_kind(0.0, 1.0) == "sampled"  # LaDiR's latents still drawn
    assert decode_kind(float("nan"), 0.0) == "greedy"  # LD4LG: no temperature knob
    assert decode_kind(1.0, float("nan")) == "sampled" and decode_kind(float("nan"), float("nan")) is None
