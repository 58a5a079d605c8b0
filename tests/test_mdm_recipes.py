"""MDM's two recipes and its decoders: MGDM's focal, linearly time-weighted loss on hand-made logits,
the mask rates each recipe draws, the decoders' invariants (what is committed, how many are masked
again, threshold commits), Fast-dLLM's cache against the full forward pass, and reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.mdm import (
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    BlockLogits,
    MdmOptions,
    MdmSampleKnobs,
    draw_mask_rates,
    easy_first_step,
    low_confidence_step,
    mgdm_loss,
    prompt_ids,
    training_loss,
    unmasking_steps,
)
from harness.backbone import MASK
from harness.config import build_dataclass
from harness.errors import BadInput
from harness.lm import IGNORE, pad_ids
from harness.sampling import RowNoise


@pytest.fixture(scope="module")
def mask(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids(MASK)


PROMPTS = ("Use 12 7 3", "Use 100 25 4 9 and more")


# --------------------------------------------------------------------------------------------- loss
def test_mgdm_loss_is_focal_linearly_time_weighted_over_masked_tokens():
    torch.manual_seed(0)
    rows, question, length, vocab, steps = 3, 4, 6, 11, 20
    width = question + length
    logits = torch.randn(rows, width, vocab) * 3
    clean = torch.randint(vocab, (rows, width))
    masked = torch.zeros(rows, width, dtype=torch.bool)
    masked[:, question:] = torch.rand(rows, length) < 0.6
    masked[:, question] = True
    t = torch.tensor([1, 7, 20]) / steps  # MGDM's rates (tau + 1) / T
    loss = mgdm_loss(logits, clean.masked_fill(~masked, IGNORE), t, steps)

    total, count = 0.0, 0
    for r in range(rows):
        tau = round(float(t[r]) * steps) - 1
        for i in range(question, width):
            if masked[r, i]:  # position i-1 predicts token i
                ce = float(-F.log_softmax(logits[r, i - 1], -1)[clean[r, i]])
                total += (steps - tau) * FOCAL_ALPHA * (1 - math.exp(-ce)) ** FOCAL_GAMMA * ce
                count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    assert (FOCAL_ALPHA, FOCAL_GAMMA) == (0.25, 2.0)

    # A confidently right token costs almost nothing; a hopeless one about alpha * CE.
    sure = torch.full((1, 2, vocab), -20.0)
    sure[0, 0, 3] = 20.0
    labels = torch.tensor([[IGNORE, 3]])
    assert mgdm_loss(sure, labels, torch.tensor([1.0]), steps).item() < 1e-12
    wrong = sure.clone()
    wrong[0, 0, 3], wrong[0, 0, 5] = -20.0, 20.0
    ce = float(F.cross_entropy(wrong[0, :1], torch.tensor([3])))
    assert mgdm_loss(wrong, labels, torch.tensor([1.0]), steps).item() == pytest.approx(FOCAL_ALPHA * ce, rel=1e-4)


def test_each_recipe_draws_its_own_mask_rates():
    torch.manual_seed(0)
    mgdm = draw_mask_rates("mgdm", 4000, 1e-3, 20, "cpu")
    assert sorted(set((mgdm * 20).round().int().tolist())) == list(range(1, 21))  # 0.05, 0.10, .., 1
    assert float(mgdm.min()) == pytest.approx(0.05)
    llada = draw_mask_rates("llada", 4000, 1e-3, 20, "cpu")
    assert float(llada.min()) >= 1e-3 and float(llada.max()) < 1 and len(set(llada.tolist())) > 3000


def test_training_loss_follows_the_recipe(tokenizer, model, monkeypatch):
    problems = [{"prompt": "Use 12 7 3 to make 57.\n", "reference": "12+7=19. The answer is 19."}] * 4
    calls = []
    monkeypatch.setattr("baselines.mdm.mgdm_loss", lambda logits, labels, t, steps: calls.append((labels, t, steps))
                        or logits.sum() * 0)
    monkeypatch.setattr("baselines.mdm.diffusion_loss", lambda *args: pytest.fail("LLaDA's loss under recipe mgdm"))
    for seed in range(20):
        torch.manual_seed(seed)
        training_loss(model, tokenizer, problems, gen_length=40, min_mask_rate=1e-3, device="cpu", recipe="mgdm",
                      diffusion_steps=20)
    rates = torch.cat([(labels[:, -40:] != IGNORE).float().mean(1) for labels, *_ in calls])
    assert all(steps == 20 for *_, steps in calls) and all(bool((labels[:, :-40] == IGNORE).all()) for labels, *_ in calls)
    assert torch.cat([t for _, t, _ in calls]).min() >= 0.05
    assert rates.sub(torch.cat([t for _, t, _ in calls])).abs().mean() < 0.1


def test_options_and_knobs_refuse_unknown_recipes_decoders_and_caches():
    for options in ({"recipe": "d3pm"}, {"base": "bert"}, {"diffusion_steps": 0}):
        with pytest.raises(BadInput):
            build_dataclass(MdmOptions, options, "method_options")
    for knobs in ({"decoder": "beam"}, {"cache": "full"}, {"threshold": 1.0},
                  {"decoder": "easy_first", "threshold": 0.9}, {"remask_noise": -1}, {"confidence": "random"},
                  {"decoder": "easy_first", "confidence": "margin"}, {"confidence": "entropy", "threshold": 0.9},
                  {"decoder": "easy_first", "cache": "committed"}):
        with pytest.raises(BadInput):
            build_dataclass(MdmSampleKnobs, knobs, "knob")


# ------------------------------------------------------------------------------------ decoder steps
def test_low_confidence_step_commits_the_most_confident_and_threshold_at_least_one():
    mask, vocab = 0, 6
    block = torch.tensor([[mask, 4, mask, mask], [mask, mask, mask, mask]])
    logits = torch.zeros(2, 4, vocab)
    # confidence e^v / (e^v + 4): row 0 (0.83, -, 0.9995, 0.40), row 1 (0.65, 0.40, 0.9987, 0.9964)
    for row, position, token, value in [(0, 0, 2, 3.0), (0, 2, 3, 9.0), (0, 3, 5, 1.0),
                                        (1, 0, 1, 2.0), (1, 1, 2, 1.0), (1, 2, 3, 8.0), (1, 3, 4, 7.0)]:
        logits[row, position, token] = value
    logits[:, :, mask] = 50.0  # the mask token is never drawn

    def step(remaining_after, threshold):
        return low_confidence_step(block, logits, mask, remaining_after, 0.0, threshold, None).tolist()

    # the schedule alone: each row down to 2 masked (row 0 commits one, row 1 two), most confident first
    assert step(2, 0.0) == [[mask, 4, 3, mask], [mask, mask, 3, 4]]
    # threshold: every token at least that confident, never fewer than the schedule asks, at least one
    assert step(3, 0.0) == [[mask, 4, mask, mask], [mask, mask, 3, mask]]
    assert step(3, 0.99) == [[mask, 4, 3, mask], [mask, mask, 3, 4]]
    assert step(3, 0.8) == [[2, 4, 3, mask], [mask, mask, 3, 4]]
    assert step(3, 0.9999) == [[mask, 4, 3, mask], [mask, mask, 3, mask]]  # none that sure: one each
    assert step(0, 0.5) == [[2, 4, 3, 5], [1, 2, 3, 4]]  # the schedule's end leaves nothing masked


def test_low_confidence_step_ranks_positions_by_margin_or_entropy_when_asked():
    mask = 0
    block = torch.full((2, 2), mask)
    # the probabilities of tokens 1..5 (the mask token never drawn): each row commits one of its two positions
    probs = torch.tensor([
        [[0.45, 0.45, 0.10, 0.0, 0.0], [0.44, 0.28, 0.28, 0.0, 0.0]],  # a tie at the top, no margin | a margin
        [[0.50, 0.50, 0.0, 0.0, 0.0], [0.52, 0.12, 0.12, 0.12, 0.12]],  # two candidates | one likelier, the rest spread
    ])
    logits = torch.cat([torch.zeros(2, 2, 1), probs.clamp_min(1e-12).log()], -1)

    def committed_position(confidence):
        committed = low_confidence_step(block, logits.clone(), mask, 1, 0.0, 0.0, None, confidence)
        return (committed != mask).float().argmax(1).tolist()

    assert committed_position("probability") == [0, 1]  # 0.45 > 0.44; 0.52 > 0.50
    assert committed_position("margin") == [1, 1]  # margins 0 < 0.16; 0 < 0.40
    assert committed_position("entropy") == [0, 0]  # entropies 0.95 < 1.07; 0.69 < 1.36


def test_easy_first_step_takes_the_argmax_everywhere_and_masks_the_least_sure_again():
    mask, vocab = 0, 5
    logits = torch.zeros(1, 6, vocab)
    sureness = [4.0, 1.0, 6.0, 0.5, 3.0, 2.0]
    for position, value in enumerate(sureness):
        logits[0, position, 1 + position % 4] = value
    logits[:, :, mask] = 100.0
    tokens = easy_first_step(logits, mask, t=10, steps=20, remask_noise=0.0, uniforms=None)
    assert int((tokens == mask).sum()) == 6 * 10 // 20  # floor(L t / T)
    assert (tokens == mask).nonzero()[:, 1].tolist() == [1, 3, 5]  # the three least sure, committed ones included
    kept = tokens != mask
    assert tokens[kept].tolist() == [1 + p % 4 for p in range(6) if kept[0, p]]
    assert not bool((easy_first_step(logits, mask, 0, 20, 0.5, torch.rand(1, 6)) == mask).any())  # t = 0: all kept
    # Gumbel noise (scaled by remask_noise t/T) moves which ones are masked, never how many
    noisy = [easy_first_step(logits, mask, 15, 20, 0.5, torch.rand(1, 6)) for _ in range(20)]
    assert all(int((n == mask).sum()) == 6 * 15 // 20 for n in noisy)


# ------------------------------------------------------------------------------------ whole decodes
def decode(model, tokenizer, mask, seed=0, prompts=PROMPTS, **knobs):
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    return list(unmasking_steps(model, ids, 16, mask, knobs.pop("steps", 8), noise=RowNoise(
        [seed + i for i in range(len(ids))]), **knobs))


def test_threshold_decoding_commits_at_least_one_per_step_and_never_revisits(tokenizer, model, mask):
    states = decode(model, tokenizer, mask, steps=8, threshold=0.5, block_length=8)
    before = torch.full_like(states[0], mask)
    for state in states:
        newly = ((before == mask) & (state != mask)).sum(1)
        assert bool(((newly >= 1) | ~(before == mask).any(1)).all())  # every row with masks left commits
        kept = before != mask
        assert torch.equal(state[kept], before[kept])
        before = state
    assert not bool((states[-1] == mask).any())
    # a threshold every token reaches finishes each block in its first step, the rest run no forward pass
    eager = decode(model, tokenizer, mask, steps=8, threshold=1e-9, block_length=8)
    assert not bool((eager[0][:, :8] == mask).any()) and bool((eager[0][:, 8:] == mask).all())
    assert torch.equal(eager[1], eager[3]) and not bool((eager[4] == mask).any())


@pytest.mark.parametrize("cache", ["none", "prefix", "dual", "committed"])
def test_a_row_whose_block_is_finished_runs_no_forward_pass(tokenizer, model, mask, cache):
    # threshold decoding leaves out the rows whose block is finished: their logits are not computed,
    # and the others' are what a call over every row gives them
    question, question_valid = pad_ids([prompt_ids(tokenizer, p) for p in PROMPTS], mask, left=True, device="cpu")
    target = torch.full((2, 12), mask)
    target[:, :3] = torch.tensor(tokenizer.encode("12+", add_special_tokens=False))
    logits_of = BlockLogits(model, question, question_valid, 12, cache, mask_id=mask)
    rows_run = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: rows_run.append(out.size(0)))
    try:
        with torch.no_grad():
            logits_of.start_block(0, 4)
            first = logits_of(target, torch.tensor([False, True]))  # with a cache, it refreshes every row
            target[:, 3] = tokenizer.convert_tokens_to_ids("7")
            every = logits_of(target)
            second = logits_of(target, torch.tensor([False, True]))
    finally:
        hook.remove()
    assert rows_run == [1 if cache == "none" else 2, 2, 1] and first.shape[0] == second.shape[0] == 1
    assert torch.allclose(second, every[1:], atol=1e-5)


def test_easy_first_decoding_remasks_on_schedule_and_may_revise_committed_tokens(tokenizer, model, mask):
    states = decode(model, tokenizer, mask, steps=8, decoder="easy_first")
    assert [int((s == mask).sum(1).max()) for s in states] == [16 * t // 8 for t in range(7, -1, -1)]
    assert not bool((states[-1] == mask).any())
    blocked = decode(model, tokenizer, mask, steps=8, decoder="easy_first", block_length=8)
    assert bool((blocked[3][:, 8:] == mask).all()) and not bool((blocked[3][:, :8] == mask).any())


@pytest.mark.parametrize("cache,refresh", [("prefix", "all"), ("dual", "all"), ("prefix", "last_block"),
                                           ("dual", "last_block")])
def test_cache_gives_the_full_forward_logits_while_nothing_changed(tokenizer, model, mask, cache, refresh):
    question, question_valid = pad_ids([prompt_ids(tokenizer, p) for p in PROMPTS], mask, left=True, device="cpu")
    target = torch.full((2, 12), mask)
    target[:, :6] = torch.tensor(tokenizer.encode("12+7=1", add_special_tokens=False))
    full = BlockLogits(model, question, question_valid, 12, "none")
    cached = BlockLogits(model, question, question_valid, 12, cache, refresh)
    with torch.no_grad():
        for start, end in [(0, 4), (4, 8), (8, 12)]:
            full.start_block(start, end)
            cached.start_block(start, end)
            reference = full(target)
            assert reference.shape[1] == end - start
            assert torch.allclose(cached(target), reference, atol=1e-5)  # the refreshing pass
            assert torch.allclose(cached(target), reference, atol=1e-5)  # against the kept keys/values
            changed = target.clone()
            changed[:, start] = tokenizer.convert_tokens_to_ids("9")
            approximate = cached(changed)  # cached positions do not see the change: close, not equal
            assert (approximate - full(changed)).abs().max() < 0.5
        # a dropped row leaves the others' logits as they were
        cached.select(torch.tensor([False, True]))
        assert torch.allclose(cached(target[1:]), reference[1:], atol=1e-5)


def test_committed_cache_runs_the_masked_and_changed_columns_and_keeps_a_committed_token_keys(tokenizer, model,
                                                                                             mask):
    # dKV-Cache's decode variant: after the refreshing pass a call runs, per row, the masked columns,
    # the columns whose logits predict them and those committed since the last call; rows run as many
    # as the busiest, the others repeating a column
    question, question_valid = pad_ids([prompt_ids(tokenizer, p) for p in PROMPTS], mask, left=True, device="cpu")
    width = question.size(1)
    target = torch.full((2, 12), mask)
    target[0, :6] = torch.tensor(tokenizer.encode("12+7=1", add_special_tokens=False))
    target[1, :3] = torch.tensor(tokenizer.encode("25-", add_special_tokens=False))

    def exact(target):  # every column computed afresh: logits of the block and each layer's keys
        fresh = BlockLogits(model, question, question_valid, 12, "prefix")
        fresh.start_block(0, 12)
        return fresh(target), [keys for keys, _ in fresh.kept]

    cached = BlockLogits(model, question, question_valid, 12, "committed", mask_id=mask)
    cached.start_block(0, 12)
    tokens_run = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: tokens_run.append(out.shape[:2]))
    try:
        with torch.no_grad():
            reference, _ = exact(target)
            tokens_run.clear()
            assert torch.allclose(cached(target), reference, atol=1e-5)  # the refreshing pass: every column
            again = cached(target)  # nothing changed: the masked positions' logits are exact
            masked = target == mask
            assert torch.allclose(again[masked], reference[masked], atol=1e-5)
            assert bool((again[~masked] == 0).all())  # a committed position's logits are not computed
            # row 0: 6 masked and the column before them; row 1: 9 masked and the one before
            assert tokens_run == [(2, width + 12), (2, 10)]

            before = [keys.clone() for keys, _ in cached.kept]
            changed = target.clone()
            changed[0, 6], changed[1, 3] = tokenizer.convert_tokens_to_ids("3"), tokenizer.convert_tokens_to_ids("4")
            approximate = cached(changed)
            reference, keys = exact(changed)
            still = changed == mask
            assert (approximate[still] - reference[still]).abs().max() < 0.5  # committed columns kept: close
            assert tokens_run[2] == (2, 9)  # row 0: 5 masked, the newly committed one before them, row 1 8 + 1
            # the new token's keys were computed with it in place: the first layer's (its embedding and
            # position only) exactly; the columns committed before were not run again
            new = width + 6
            assert not torch.allclose(before[0][0, :, new], cached.kept[0][0][0, :, new], atol=1e-4)
            assert torch.allclose(cached.kept[0][0][0, :, new], keys[0][0, :, new], atol=1e-5)
            assert torch.equal(cached.kept[-1][0][0, :, width + 2], before[-1][0, :, width + 2])
    finally:
        hook.remove()


@pytest.mark.parametrize("knobs", [{}, {"cache": "dual", "refresh": "last_block"}, {"decoder": "easy_first"},
                                   {"cache": "committed", "threshold": 0.3}])
def test_rows_that_ended_stop_and_their_text_is_unchanged(tokenizer, model, mask, knobs):
    free = decode(model, tokenizer, mask, steps=8, block_length=4, temperature=0.0, remask_noise=0.0, **knobs)[-1]
    stop = int(free[0, 1])  # a token the model writes early in row 0: take it for `</s>`
    states = decode(model, tokenizer, mask, steps=8, block_length=4, temperature=0.0, remask_noise=0.0,
                    stop_id=stop, **knobs)
    stopped = states[-1]
    for row in range(2):
        ids = free[row].tolist()
        cut = ids.index(stop) if stop in ids else len(ids)
        assert stopped[row, :cut + 1].tolist() == ids[:cut + 1]  # the text up to its end is the same
        assert bool((stopped[row, (cut // 4 + 1) * 4:] == stop).all())  # filled from the next block on
    assert not bool((stopped == mask).any())
    if stop in free[1].tolist() and free[1].tolist().index(stop) < 4:
        assert len(states) < 8  # every row ended after the first block: no more forward passes


@pytest.mark.parametrize("knobs", [{}, {"decoder": "easy_first"}, {"threshold": 0.3, "cache": "dual", "block_length": 4},
                                   {"decoder": "easy_first", "cache": "prefix", "block_length": 8},
                                   {"threshold": 0.3, "cache": "committed"}, {"cache": "committed", "block_length": 8}])
def test_same_seed_same_samples(tokenizer, model, mask, knobs):
    first = decode(model, tokenizer, mask, 3, **dict(knobs))[-1]
    assert torch.equal(first, decode(model, tokenizer, mask, 3, **dict(knobs))[-1])
    assert not torch.equal(first, decode(model, tokenizer, mask, 9, **dict(knobs))[-1])
    alone = decode(model, tokenizer, mask, 3, prompts=PROMPTS[:1], **dict(knobs))[-1]
    assert torch.equal(alone[0], first[0])  # a row's sample is its own, whatever shares its batch
