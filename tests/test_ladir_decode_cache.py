"""LaDiR's VAE decoder keeps each trajectory's context in its KV cache across blocks
(`ladir.vae.DecoderContext`): the sentences it writes are the ones a from-scratch greedy decoding of
`<s> question earlier-sentences latents` writes, row by row, with no padding and no cache."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.backbone import build_char_tokenizer
from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.lm import encode_pairs, next_token_loss
from harness.methods import get_method_class
from ladir.method import SentenceReencoder
from ladir.vae import SentenceVAE, reasoning_context
from tests.conftest import MICRO_SETTINGS, micro_lm

QUESTIONS = ["Use 3 5 to make 8.", "Use 12 7 3 to make 57.", "Use 9 2 to make 7."]
SENTENCES = ["3+5=8.", "12+7=19.", "19*3=57.", "9-2=7."]
MAX_TOKENS = 9


@pytest.fixture(scope="module")
def vae() -> SentenceVAE:
    """A context-reading VAE whose decoder has learnt a little language (so that it writes sentences
    of different lengths and stops), with a random latent projection."""
    tokenizer = build_char_tokenizer([*QUESTIONS, *SENTENCES, "0123456789+-*/=(). Theanswrik"])
    torch.manual_seed(0)
    base = micro_lm(tokenizer)
    optimizer = torch.optim.Adam(base.parameters(), lr=1e-2)
    contexts = [QUESTIONS[0], QUESTIONS[1], f"{QUESTIONS[1]} {SENTENCES[1]}", QUESTIONS[2]]
    for _ in range(30):
        batch = encode_pairs(tokenizer, contexts, SENTENCES, 64, loss_on_prompt=True)
        loss = next_token_loss(base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae = SentenceVAE(copy.deepcopy(base), base, tokenizer, latent_tokens=2, latent_dim=4,
                      max_sentence_tokens=MAX_TOKENS, decoder_context=True)
    return vae.requires_grad_(False).eval()


def from_scratch(vae: SentenceVAE, z: torch.Tensor, context: str) -> str:
    """Greedy decoding of one latent block after `<s> context`, the whole sequence re-run at every token."""
    embed = vae.decoder.get_input_embeddings()
    prefix = torch.cat([embed(torch.tensor([vae.context_ids(context)])), vae.latent_embeddings(z[None])], dim=1)
    written = []
    for _ in range(MAX_TOKENS):
        token = int(vae.decoder(inputs_embeds=prefix).logits[0, -1].argmax())
        if token == vae.tokenizer.eos_token_id:
            break
        written.append(token)
        prefix = torch.cat([prefix, embed(torch.tensor([[token]]))], dim=1)
    return vae.tokenizer.decode(written, skip_special_tokens=True).strip()


def blocks_from_scratch(vae: SentenceVAE, questions: list[str], z: torch.Tensor, present: torch.Tensor):
    reasoning: list[list[str]] = [[] for _ in questions]
    for i, question in enumerate(questions):
        for b in range(z.size(1)):
            if present[i, b]:
                reasoning[i].append(from_scratch(vae, z[i, b], reasoning_context(question, reasoning[i])))
    return reasoning


def blocks_cached(vae: SentenceVAE, questions: list[str], z: torch.Tensor, present: torch.Tensor,
                  release: bool = True):
    reasoning: list[list[str]] = [[] for _ in questions]
    decoder = vae.read_contexts(questions)
    for b in range(z.size(1)):
        rows = present[:, b].nonzero().squeeze(1).tolist()
        if release:
            decoder.keep(rows)
        for i, text in zip(rows, decoder.decode(z[rows, b], rows), strict=True):
            reasoning[i].append(text)
    return reasoning


# questions of different lengths, repeated (a question's trajectories) and not; rows that stop early
ROWS = [0, 1, 1, 2, 0, 1]
PRESENT = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool)


@torch.no_grad()
def test_cached_contexts_write_the_sentences_a_from_scratch_decoding_writes(vae):
    questions = [QUESTIONS[i] for i in ROWS]
    torch.manual_seed(1)
    z = 2 * torch.randn(len(ROWS), PRESENT.size(1), vae.latent_tokens, vae.latent_dim)
    reference = blocks_from_scratch(vae, questions, z, PRESENT)
    assert blocks_cached(vae, questions, z, PRESENT) == reference
    # rows that skip a block are carried along masked, not released, and may decode again later
    skipping = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
    assert blocks_cached(vae, questions, z, skipping, release=False) == blocks_from_scratch(vae, questions, z, skipping)
    # the case is not degenerate: sentences of several lengths, some stopped before max_tokens
    lengths = {len(s) for row in reference for s in row}
    assert len(lengths) >= 3 and min(lengths) < MAX_TOKENS
    # one-shot decoding of many contexts at once (held-out reconstruction, the trace) agrees too
    contexts = [reasoning_context(q, r[:1]) for q, r in zip(questions, reference, strict=True)]
    assert vae.decode(z[:, 1], contexts) == [from_scratch(vae, z[i, 1], c) for i, c in enumerate(contexts)]


@torch.no_grad()
def test_each_distinct_question_is_read_once_and_only_new_tokens_after(vae):
    questions = [QUESTIONS[i] for i in ROWS]
    torch.manual_seed(2)
    z = torch.randn(len(ROWS), 2, vae.latent_tokens, vae.latent_dim)
    shapes = []
    hook = vae.decoder.register_forward_hook(lambda module, args, kwargs, out: shapes.append(
        tuple((kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]).shape[:2])),
        with_kwargs=True)
    try:
        decoder = vae.read_contexts(questions)
        first = decoder.decode(z[:, 0])
        passes_first = len(shapes)
        decoder.decode(z[:, 1])
    finally:
        hook.remove()
    longest = max(len(vae.context_ids(q)) for q in QUESTIONS)
    assert shapes[0] == (len(set(ROWS)), longest)  # the questions, once each
    assert shapes[1] == (len(ROWS), 1 + vae.latent_tokens)  # nothing pending yet (one masked column), the latents
    # the second block reads only the first sentences (the longest, and `" "` before it) with its latents
    width = max(len(vae.tokenizer.encode(" " + s, add_special_tokens=False)) for s in first)
    assert shapes[passes_first] == (len(ROWS), width + vae.latent_tokens)
    # then one token per pass, rows that wrote `</s>` dropped as they finish
    token_passes = shapes[2:passes_first]
    assert all(columns == 1 for _, columns in token_passes) and token_passes[0][0] == len(ROWS)
    assert [rows for rows, _ in token_passes] == sorted((rows for rows, _ in token_passes), reverse=True)
    assert token_passes[-1][0] < len(ROWS)
    decoder.keep([0])  # the other rows stop reasoning
    with pytest.raises(ValueError, match="released"):
        decoder.decode(z[:2, 1], [0, 1])


@torch.no_grad()
def test_a_context_that_tokenises_differently_once_extended_is_read_again(vae, monkeypatch):
    # a tokenizer whose every text ends in a marker: extending a context changes its last cached
    # token, which must be masked out of the cache and the new tokens read in its place
    marker = vae.tokenizer.convert_tokens_to_ids(".")
    ids_of = type(vae).context_ids
    monkeypatch.setattr(vae, "context_ids", lambda text: [*ids_of(vae, text), marker])
    questions = [QUESTIONS[i] for i in ROWS]
    torch.manual_seed(3)
    z = 2 * torch.randn(len(ROWS), PRESENT.size(1), vae.latent_tokens, vae.latent_dim)
    assert blocks_cached(vae, questions, z, PRESENT) == blocks_from_scratch(vae, questions, z, PRESENT)


@pytest.mark.parametrize("decoder_context", ["none", "reasoning"])
def test_reencoding_and_decoding_after_sampling_write_the_same_sentences(tmp_path, decoder_context):
    overrides = ["method=ladir", *MICRO_SETTINGS,
                 f"method_options={{decoder_context: {decoder_context}, max_sentence_tokens: 8}}"]
    method = get_method_class("ladir")(RunContext(load_config("tiny", None, [parse_override(o) for o in overrides]),
                                                  tmp_path / "r", tmp_path))
    method.load_untrained()
    problems = [method.ctx.task.problems("test")[i] for i in (0, 0, 1, 2)]
    torch.manual_seed(4)
    z = torch.randn(len(problems), 3, method.options.latent_tokens, method.options.latent_dim)
    present = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    reencoder = SentenceReencoder(method, problems)
    with torch.no_grad():
        for b in range(z.size(1)):
            reencoder.project(b, z[:, b], present[:, b])
    assert reencoder.sentences == method.decode_reasoning(problems, z, present)
    assert [len(s) for s in reencoder.sentences] == present.sum(1).tolist()
