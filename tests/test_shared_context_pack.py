"""Packing rows whose contexts extend one another (`harness.lm.SharedContextPack`), as LaDiR's VAE
reads a problem's sentences: every row computes what it computes alone, with each shared context
token read once, and the compute counter counts the real tokens only."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.backbone import build_char_tokenizer, tiny_llama
from harness.compute import ComputeCounter
from harness.config import ModelConfig
from harness.lm import SharedContextPack
from ladir.vae import SentenceVAE, sentence_pairs
from tasks import get_task

PAD = 0


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=128)).eval()


def rows_alone(model, contexts, privates) -> list[torch.Tensor]:
    """Each row's logits computed by itself: no padding, no packing, positions from 0."""
    embed = model.get_input_embeddings()
    return [model(inputs_embeds=torch.cat([embed(torch.tensor(c)), p])[None]).logits[0]
            for c, p in zip(contexts, privates, strict=True)]


def two_problems() -> tuple[list[list[int]], list[torch.Tensor]]:
    """Two problems of three rows each (each context extends the one before), then a lone row."""
    torch.manual_seed(1)
    q1, s1, s2 = [1, 5, 6, 7], [8, 9, 10], [11, 12]
    q2, t1 = [1, 20, 21], [22, 23, 24, 25]
    contexts = [q1, q1 + s1, q1 + s1 + s2, q2, q2 + t1, q2 + t1 + [26], [1, 30]]
    privates = [torch.randn(n, 32) for n in (3, 5, 2, 4, 1, 3, 2)]
    return contexts, privates


def test_each_packed_row_computes_what_it_computes_alone():
    model = llama()
    contexts, privates = two_problems()
    pack = SharedContextPack(contexts, [len(p) for p in privates], PAD, "cpu")
    assert len(pack.ids) == 3, "one packed row per problem, the lone row on its own"
    real_tokens = int(pack.mask[:, 0].diagonal(dim1=-2, dim2=-1).sum())
    unpacked_tokens = sum(len(c) + len(p) for c, p in zip(contexts, privates, strict=True))
    # q1 + 3, s1 + 5, s2 + 2; q2 + 4, t1 + 1, "26" + 3; the lone row's 2 + 2
    assert real_tokens == (4 + 3 + 3 + 5 + 2 + 2) + (3 + 4 + 4 + 1 + 1 + 3) + (2 + 2) == 39
    assert unpacked_tokens == 60
    with torch.no_grad():
        packed = pack.run(model, privates).logits
        alone = rows_alone(model, contexts, privates)
    rows, cols = pack.columns([len(p) for p in privates])
    by_row = packed[rows, cols].split([len(p) for p in privates])
    for i, context in enumerate(contexts):
        assert torch.allclose(by_row[i], alone[i][len(context):], atol=1e-5), f"row {i}'s private tokens"
    # the context tokens too: the packed row's shared context is the longest row's context, read once
    longest = alone[2][: len(contexts[2])]
    assert torch.allclose(packed[0][pack.is_context[0]], longest, atol=1e-5)


def test_a_packed_row_stops_growing_at_max_growth_and_the_rest_start_a_new_one():
    model = llama()
    contexts, privates = two_problems()
    pack = SharedContextPack(contexts, [len(p) for p in privates], PAD, "cpu", max_growth=1.0)
    longest = max(len(c) + len(p) for c, p in zip(contexts, privates, strict=True))
    assert len(pack.ids) > 3 and pack.ids.size(1) <= longest
    with torch.no_grad():
        packed = pack.run(model, privates).logits
        alone = rows_alone(model, contexts, privates)
    rows, cols = pack.columns([len(p) for p in privates])
    expected = torch.cat([a[len(c):] for a, c in zip(alone, contexts, strict=True)])
    assert torch.allclose(packed[rows, cols], expected, atol=1e-5)


def test_eager_attention_gets_the_same_mask_as_added_scores_and_others_are_refused():
    contexts, privates = two_problems()
    pack = SharedContextPack(contexts, [len(p) for p in privates], PAD, "cpu")
    sdpa, eager = llama(), llama()
    eager.config._attn_implementation = "eager"
    with torch.no_grad():
        assert torch.allclose(pack.run(sdpa, privates).logits, pack.run(eager, privates).logits, atol=1e-5)
    eager.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="sdpa or eager"):
        pack.run(eager, privates)


def test_rows_that_share_only_one_token_are_not_packed():
    contexts, privates = [[1], [1], [1, 2, 3], [1, 2, 3, 4]], [4, 4, 2, 2]
    pack = SharedContextPack(contexts, privates, PAD, "cpu")
    assert len(pack.ids) == 3 and pack.columns(privates)[0].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_a_row_with_nothing_to_read_takes_no_columns():
    pack = SharedContextPack([[1, 2], [], [3]], [2, 0, 1], PAD, "cpu")
    assert len(pack.ids) == 2 and pack.columns([2, 0, 1])[1].tolist() == [2, 3, 1]


def test_the_compute_counter_counts_a_packs_real_tokens_not_its_padding():
    model = llama()
    contexts, privates = two_problems()
    pack = SharedContextPack(contexts, [len(p) for p in privates], PAD, "cpu")
    counter = ComputeCounter()
    with counter, torch.no_grad():
        pack.run(model, privates)
    assert pack.ids.numel() > 39 and counter.total.forward_tokens == 39


def test_the_vae_reads_each_problem_packed_and_gets_what_each_sentence_gets_alone():
    task = get_task("countdown4")
    problems = task.problems("train")[:3]
    pairs = sentence_pairs(task, problems, earlier_sentences=True)
    tokenizer = build_char_tokenizer([p["prompt"] + p["reference"] for p in problems])
    base = tiny_llama(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), len(tokenizer),
                      tokenizer, 0)
    vae = SentenceVAE(copy.deepcopy(base), base, tokenizer, latent_tokens=3, latent_dim=4, decoder_context=True).eval()
    contexts, sentences = [c for c, _ in pairs], [s for _, s in pairs]
    with torch.no_grad():
        mu, logvar = vae.encode(pairs)
        for i, pair in enumerate(pairs):  # a pack of one row is the plain sequence
            alone = vae.encode([pair])
            assert torch.allclose(mu[i], alone[0][0], atol=1e-5) and torch.allclose(logvar[i], alone[1][0], atol=1e-5)
        together = vae.reconstruction_loss(mu, sentences, contexts)
        # the batch's loss is the mean over every written token: each sentence weighted by its length + </s>
        weights = torch.tensor([len(s) + 1 for s in sentences], dtype=torch.float)
        each = torch.stack([vae.reconstruction_loss(mu[i : i + 1], [s], [c])
                            for i, (c, s) in enumerate(pairs)])
    assert len(pairs) > len(problems)
    assert torch.allclose(together, (each * weights).sum() / weights.sum(), atol=1e-5)
