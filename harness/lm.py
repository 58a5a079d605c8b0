"""Causal-LM pieces shared by the base checkpoint, AR-SFT and any other method that writes text
left to right: batching prompt/completion pairs, the next-token loss, and KV-cached sampling."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from harness.sampling import RowNoise, draw_tokens

IGNORE = -100


def encode_pairs(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_length: int,
                 loss_on_prompt: bool = False, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded `<s> prompt completion </s>` batches; labels cover the completion (and prompt if asked)."""
    rows, label_rows = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = [tokenizer.bos_token_id, *tokenizer.encode(prompt, add_special_tokens=False)]
        completion_ids = [*tokenizer.encode(completion, add_special_tokens=False), tokenizer.eos_token_id]
        ids = (prompt_ids + completion_ids)[:max_length]
        labels = ids.copy() if loss_on_prompt else [IGNORE] * len(prompt_ids) + completion_ids
        rows.append(ids)
        label_rows.append(labels[: len(ids)])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, label_rows)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "labels": labels.to(device)}


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE of position i predicting token i+1, over labelled tokens."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def lm_loss(model, tokenizer, problems: Sequence[dict], max_length: int, loss_on_prompt: bool = False,
            device: torch.device | str = "cpu", return_hidden: bool = False):
    """The one language-modelling loss: next-token CE on `<s> prompt reference </s>` (the base LM, AR-SFT
    and the AR-based baselines). With `return_hidden`, also the batch and the last hidden states, for
    objectives that add heads on top (MTP)."""
    batch = encode_pairs(tokenizer, [p["prompt"] for p in problems], [p["reference"] for p in problems],
                         max_length, loss_on_prompt=loss_on_prompt, device=device)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=return_hidden)
    loss = next_token_loss(out.logits, batch["labels"])
    if return_hidden:
        return loss, batch, out.hidden_states[-1]
    return loss


class CachedSequence:
    """A batch of sequences grown chunk by chunk through the model's KV cache.

    Every call passes the whole 2-D attention mask so far and explicit position ids (each row counts
    only its unpadded tokens), so a left-padded row computes what it would alone, whatever it is
    batched with.
    """

    def __init__(self, model, rows: int, device: torch.device | str):
        self.model = model
        self.cache = DynamicCache()
        self.mask = torch.zeros((rows, 0), dtype=torch.long, device=device)
        self.length = torch.zeros(rows, dtype=torch.long, device=device)  # unpadded tokens per row

    def __len__(self) -> int:
        return len(self.mask)

    def append(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, all_logits: bool = True, hidden_states: bool = False):
        """Run ids or embeddings (B, L[, d]) after the sequence so far; `mask` (B, L) marks padding (default: none)."""
        chunk = input_ids if input_ids is not None else inputs_embeds
        if mask is None:
            mask = torch.ones(chunk.shape[:2], dtype=torch.long, device=chunk.device)
        positions = (self.length[:, None] + mask.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, mask.long()], dim=1)
        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=self.mask,
                         position_ids=positions, past_key_values=self.cache, use_cache=True,
                         output_hidden_states=hidden_states, logits_to_keep=0 if all_logits else 1)
        self.length = self.length + mask.long().sum(-1)
        return out

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (indices), e.g. the ones still writing."""
        self.cache.batch_select_indices(rows)
        self.mask, self.length = self.mask[rows], self.length[rows]

    def crop(self, width: int) -> None:
        """Back to the first `width` columns."""
        self.cache.crop(width - self.mask.size(1))  # a negative count: the columns removed from the end
        self.mask = self.mask[:, :width]
        self.length = self.mask.sum(-1)

    def fork(self) -> CachedSequence:
        """A continuation of this sequence that can grow, crop and drop rows on its own. It shares the
        keys/values read so far, not copied: a DynamicCache layer grows, crops and selects by making
        new tensors, never in place."""
        twin = copy.copy(self)
        twin.cache = copy.copy(self.cache)
        twin.cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        return twin


def pad_ids(rows: Sequence[Sequence[int]], pad: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, valid) of token rows padded with `pad` to one width, on the left (prompts whose next
    tokens must share a column) or on the right; `valid` is False on padding."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        if row:
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(list(row), dtype=torch.long)
            valid[i, span] = True
    return ids.to(device), valid.to(device)


class SharedContextPack:
    """Rows whose contexts extend one another (a problem's reasoning sentences, each read after the
    question and the sentences before it) packed so that each shared context token is read once.

    Input row i is `context_i` then `private_i` tokens (what is read after the context: a sentence
    and latent queries, latents and a sentence). Consecutive rows join one packed row while each
    context extends the one before it: the packed row holds the longest context once, each row's
    private tokens placed right after the part of the context they follow. A 4-D attention mask lets
    a private token see its own context and the private tokens before it in its own row, and
    nothing else; position ids are those each token has in its own row. Attention depends on the
    tokens it sees and their relative positions alone, so every row computes what it would alone,
    with about half the tokens for Countdown's three sentences. A packed row stops growing at
    `max_growth` times the longest input row, so attention's quadratic cost stays bounded, and a row
    joins only when it shares at least `min_shared` tokens (a lone `<s>` is not worth a wider row). Padding
    queries see column 0 only and are seen by nothing, so a padded position never sees itself: the
    diagonal of the mask marks the real tokens (what `harness.compute` counts).
    """

    def __init__(self, contexts: Sequence[Sequence[int]], private_lengths: Sequence[int], pad: int,
                 device: torch.device | str, max_growth: float = 2.0, min_shared: int = 2):
        limit = max_growth * max((len(c) + n for c, n in zip(contexts, private_lengths, strict=True)), default=1)
        # per packed row, per column: (token id, position in its own row, owner row or -1 for context, branch)
        packed: list[list[tuple[int, int, int, int]]] = []
        self.private_at: list[tuple[int, int]] = []  # each input row's (packed row, first private column)
        chain: list[int] = []  # the context read so far in the last packed row
        for i, (context, n) in enumerate(zip(contexts, private_lengths, strict=True)):
            context = list(context)
            if not context and not n:  # nothing to read: no columns, and no packed row of padding alone
                self.private_at.append((max(0, len(packed) - 1), 0))
                continue
            grown = (len(packed[-1]) + len(context) - len(chain) + n) if packed else None
            if not (packed and len(chain) >= min_shared and context[: len(chain)] == chain and grown <= limit):
                packed.append([])
                chain = []
            row = packed[-1]
            row += [(context[c], c, -1, 0) for c in range(len(chain), len(context))]  # what it adds to the chain
            chain = context
            self.private_at.append((len(packed) - 1, len(row)))
            row += [(pad, len(context) + j, i, len(context)) for j in range(n)]
        width = max((len(r) for r in packed), default=1)
        padded = [r + [(pad, 0, -2, 0)] * (width - len(r)) for r in packed]
        table = torch.tensor(padded, dtype=torch.long, device=device).reshape(len(packed), width, 4)
        self.ids, position, owner, branch = table.unbind(-1)
        real = owner > -2
        self.is_context, self.positions = owner == -1, position
        is_private = owner >= 0
        cols = torch.arange(width, device=device)
        # query a (dim 1) sees key b (dim 2)
        context_key = self.is_context[:, None, :]
        sees = context_key & self.is_context[:, :, None] & (position[:, None, :] <= position[:, :, None])
        sees |= context_key & is_private[:, :, None] & (position[:, None, :] < branch[:, :, None])
        sees |= (is_private[:, None, :] & is_private[:, :, None] & (owner[:, None, :] == owner[:, :, None])
                 & (cols[None, None, :] <= cols[None, :, None]))
        sees[:, :, 0] |= ~real  # a padding query sees column 0 alone (a row of nothing gives NaN)
        self.mask = sees[:, None]  # (R, 1, W, W)

    def columns(self, lengths: Sequence[int], start: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(packed rows, columns), each (sum of lengths,): where `lengths[i]` private tokens of input row
        i sit, from its private token `start[i]` (default 0) on, rows in input order."""
        start = start or [0] * len(lengths)
        rows, cols = [], []
        for (row, first), offset, n in zip(self.private_at, start, lengths, strict=True):
            rows += [row] * n
            cols += range(first + offset, first + offset + n)
        device = self.ids.device
        return torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device)

    def embeddings(self, embed: torch.nn.Module, private: Sequence[torch.Tensor]) -> torch.Tensor:
        """Input embeddings (R, W, H): the context tokens' from `embed`, input row i's private tokens
        from `private[i]` (n_i, H)."""
        embeds = embed(self.ids)
        if private:
            rows, cols = self.columns([len(p) for p in private])
            embeds = embeds.index_put((rows, cols), torch.cat(list(private)).to(embeds.dtype))
        return embeds

    def run(self, model, private: Sequence[torch.Tensor], **kwargs):
        """`model` (a causal LM or its backbone) over the packed rows."""
        embeds = self.embeddings(model.get_input_embeddings(), private)
        attention = model.config._attn_implementation
        if attention == "sdpa":  # a boolean mask: True takes part
            mask = self.mask
        elif attention == "eager":  # added to the scores
            mask = torch.zeros(self.mask.shape, dtype=embeds.dtype, device=embeds.device)
            mask = mask.masked_fill(~self.mask, torch.finfo(embeds.dtype).min)
        else:
            raise ValueError(f"packed rows need the sdpa or eager attention, not {attention!r}")
        return model(inputs_embeds=embeds, attention_mask=mask, position_ids=self.positions, **kwargs)


def stop_ids(tokenizer, generation_config) -> list[int]:
    """The tokenizer's end of sequence and the model's own end-of-turn tokens (chat models), from its
    generation config (a loaded model's, or read from its folder where no model is loaded: vLLM)."""
    configured = getattr(generation_config, "eos_token_id", None)
    return sorted({tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None})


def prompt_ids(tokenizer, prompt: str, add_bos: bool = True) -> list[int]:
    """The tokens a completion is written after: `<s>` (unless the prompt carries its own special
    tokens, e.g. a rendered chat template) and the prompt's own tokens."""
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    return [*bos, *tokenizer.encode(prompt, add_special_tokens=False)]


def cut_at_stop(row: Sequence[int], stops: Sequence[int]) -> list[int]:
    """The tokens before the first stop token."""
    stop_set = set(stops)
    return list(row[: next((i for i, t in enumerate(row) if t in stop_set), len(row))])


@torch.no_grad()
def write_tokens(seq: CachedSequence, logits: torch.Tensor, noise: RowNoise | None, temperature: float, top_p: float,
                 max_new_tokens: int, stops: Sequence[int]) -> list[list[int]]:
    """Continue every row of `seq` token by token from its next-token `logits` (B, V) until a stop token
    (not returned) or `max_new_tokens`; row i draws with `noise`'s stream i (none needed at temperature 0:
    greedy).

    Rows that finish are dropped from the batch once a quarter of it has, so short answers stop
    costing compute.
    """
    rows = len(seq)
    uniforms = noise.uniform(max_new_tokens).to(logits.device) if temperature > 0 else None  # (B, T): one per token
    stop = torch.tensor(list(stops), dtype=torch.long, device=logits.device)
    alive = torch.arange(rows, device=logits.device)  # the original row of each row still in `seq`
    finished = torch.zeros(rows, dtype=torch.bool, device=logits.device)
    written: list[list[int]] = [[] for _ in range(rows)]
    for step in range(max_new_tokens):
        tokens = draw_tokens(logits, temperature, None if uniforms is None else uniforms[alive, step], top_p)
        for row, token, done in zip(alive.tolist(), tokens.tolist(), finished[alive].tolist(), strict=True):
            if not done:
                written[row].append(token)
        finished[alive] |= torch.isin(tokens, stop)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        still = ~finished[alive]
        if (~still).sum() * 4 >= len(alive):
            keep = still.nonzero().squeeze(1)
            seq.select(keep)
            alive, tokens = alive[keep], tokens[keep]
        logits = seq.append(input_ids=tokens[:, None], all_logits=False).logits[:, -1]
    return [cut_at_stop(row, stops) for row in written]


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], noise: RowNoise, temperature: float, top_p: float,
                       max_new_tokens: int, add_bos: bool = True, stops: Sequence[int] | None = None) -> list[str]:
    """One completion per prompt (a batch: prompts may repeat or differ), row i drawn with `noise`'s
    stream i, with the model's KV cache.

    `add_bos=False` for prompts that carry their own special tokens (a rendered chat template);
    `stops` defaults to the model's end tokens (`[]`: always write `max_new_tokens`, as benchmarks do)."""
    device = next(model.parameters()).device
    distinct = list(dict.fromkeys(prompts))  # each prompt is run once, its samples share its cache
    ids, mask = pad_ids([prompt_ids(tokenizer, p, add_bos) for p in distinct], tokenizer.pad_token_id, left=True,
                        device=device)
    seq = CachedSequence(model, len(distinct), device)
    logits = seq.append(input_ids=ids, mask=mask, all_logits=False).logits[:, -1]
    if len(distinct) < len(prompts):
        rows = torch.tensor([distinct.index(p) for p in prompts], device=device)
        seq.select(rows)
        logits = logits[rows]
    written = write_tokens(seq, logits, noise, temperature, top_p, max_new_tokens,
                           stop_ids(tokenizer, getattr(model, "generation_config", None)) if stops is None else stops)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in written]
