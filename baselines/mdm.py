"""Masked discrete diffusion (MDM): a masked-diffusion LM fine-tuned to unmask the completion.

MGDM (Ye et al. 2025, "Beyond autoregression: discrete diffusion for complex reasoning and planning")
and LLaDA (Nie et al. 2025) at the SFT stage, each paper's recipe selectable (`recipe`). A row is

    <s> question | target_1 .. target_L        target = reference </s> </s> ... (L = gen_length)

The question is never masked; each target token is replaced by `<MASK>` with probability t, and the
model predicts every masked token from everything else at once. Padding the target with `</s>` and
training on it (both papers) lets the model choose the answer's length: it predicts where the text ends.

Attention is fully bidirectional over question and target, by a 4-D additive mask (blocked only for
padding keys, which replaces the causal mask), and the "shift" convention is kept: the logits at
position i-1 predict the token at position i (MGDM's alignment, and the one an AR base was trained
with). The question is never masked, so the position before a target token always exists.

Where it starts (`base`): the masked-diffusion base (default, harness.backbone: LLaDA's pre-training
objective on the same training text and budget as the AR base, as LLaDA starts from a diffusion LM),
the AR base (adapted as DiffuLLaMA and Dream adapt AR models), or `scratch` (as MGDM trains).

Training, per recipe (t is a row's mask rate):

    llada:  t ~ U(eps, 1),                 loss = 1/(B L) * sum_{masked i} CE_i / t
    mgdm:   t = (tau + 1)/T, tau ~ U{0..T-1}, loss = sum_{masked i} (T - tau) * alpha (1 - e^-CE_i)^gamma CE_i
                                                    / #masked          (alpha 0.25, gamma 2, T = 20)

Decoding (`decoder`; "recipe" = the recipe's own):

- low_confidence (LLaDA): every masked token drawn at `temperature` in one forward pass, the most
  confident kept so that the masked count falls linearly to 0; a committed token is never revisited.
  `confidence` is what ranks the masked positions: the probability of the drawn token (LLaDA), the
  margin between the two most probable tokens (Kim et al. 2025, "Train for the worst, plan for the
  best": it ranks a position whose top two candidates tie as unsure) or the negative entropy of the
  position's distribution (Dream's `entropy`), each from the untempered distribution.
  `threshold` > 0 (Fast-dLLM's parallel decoding) also commits every masked token whose confidence
  reaches it, at least one per step, so a block may finish before its steps run out; a row whose
  block is finished runs no forward pass until the next block.
- easy_first (MGDM's TopK): the argmax at every target position, committed ones included, then the
  lowest-scoring floor(L t/T) positions are masked again, scores perturbed by Gumbel noise at scale
  `remask_noise` * t/T (MGDM: 0.5), T = `steps`.
- greedy: low_confidence at temperature 0 (or easy_first with remask_noise 0).

`block_length` > 0 decodes semi-autoregressively (LLaDA), block by block, the steps split between
blocks. `cache` (Fast-dLLM, Wu et al. 2025) keeps the keys/values of a block's first forward pass
for the rest of the block and recomputes only the current block: "prefix" caches the question and
the finished blocks, "dual" the masked blocks after it as well. The cache is approximate (the cached
positions do not see the block's later commits) and refreshed at every block's start. "committed"
(dKV-Cache's decode variant, Ma et al. 2025) caches the committed target tokens too: a pass runs only
the masked positions, the columns whose logits predict them and the positions committed since the
last pass (their input changed from `<MASK>` to a token), each cached from then on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

from baselines.ar_sft import load_final_model
from harness.backbone import AR, MASK, SCRATCH, BaseObjective, register_base_objective
from harness.errors import BadInput
from harness.lm import IGNORE, encode_pairs, pad_ids
from harness.methods import Method
from harness.progress import console
from harness.sampling import RowNoise, Trajectory, draw_tokens
from harness.train import distributed
from harness.train.seeding import Shard
from harness.train.trainer import Trainer
from tasks import Problem

if TYPE_CHECKING:
    from harness.context import RunContext

MASKED_DIFFUSION = "masked-diffusion"  # the base family (harness.backbone.BASE_OBJECTIVES)
LLADA_MIN_MASK_RATE = 1e-3  # LLaDA's eps: t ~ U(eps, 1) keeps the 1/t weight bounded
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # MGDM's token reweighting alpha (1 - e^-l)^gamma
RECIPE_DECODER = {"llada": "low_confidence", "mgdm": "easy_first"}
DECODERS = ("low_confidence", "easy_first")
CONFIDENCES = ("probability", "margin", "entropy")
CACHES = ("none", "prefix", "dual", "committed")
REFRESHES = ("all", "last_block")


@dataclass
class MdmOptions:
    recipe: str = "llada"  # llada | mgdm: the loss (time weighting, token weighting, normalisation) and decoder
    base: str = MASKED_DIFFUSION  # masked-diffusion | ar | scratch: the checkpoint fine-tuning starts from
    # Target tokens per row (reference + </s> padding). Countdown-4's longest reference is 66
    # characters, so 96 leaves room with the tiny preset's character tokenizer; longer ones are cut.
    gen_length: int = 96
    min_mask_rate: float = LLADA_MIN_MASK_RATE  # llada: eps in t ~ U(eps, 1)
    diffusion_steps: int = 20  # mgdm: T, the discrete times; mask rates 1/T .. 1

    def __post_init__(self) -> None:
        if self.recipe not in RECIPE_DECODER:
            raise BadInput(f"method_options.recipe must be one of {', '.join(RECIPE_DECODER)}, got {self.recipe!r}")
        if self.base not in (MASKED_DIFFUSION, AR, SCRATCH):
            raise BadInput(f"method_options.base must be one of {MASKED_DIFFUSION}, {AR}, {SCRATCH}, got {self.base!r}")
        if self.gen_length < 1:
            raise BadInput(f"method_options.gen_length must be >= 1, got {self.gen_length}")
        if not 0 < self.min_mask_rate < 1:
            raise BadInput(f"method_options.min_mask_rate must be in (0, 1), got {self.min_mask_rate}")
        if self.diffusion_steps < 1:
            raise BadInput(f"method_options.diffusion_steps must be >= 1, got {self.diffusion_steps}")


@dataclass
class MdmSampleKnobs:
    decoder: str = "recipe"  # low_confidence (LLaDA) | easy_first (MGDM) | recipe: the trained recipe's
    steps: int = 32  # denoising steps over the whole target (split between blocks); gen_length/steps tokens each
    temperature: float = 1.0  # low_confidence: Gumbel-max sampling of each masked token; 0 = argmax (greedy)
    remask_noise: float = 0.5  # easy_first: Gumbel noise on the remasking scores, times t/T; 0 = deterministic
    block_length: int = 0  # semi-autoregressive blocks of this many target tokens; 0 = one block
    threshold: float = 0.0  # low_confidence: also commit every masked token this confident (Fast-dLLM); 0 = off
    confidence: str = "probability"  # low_confidence: probability | margin | entropy, what ranks the positions
    cache: str = "none"  # none | prefix | dual (Fast-dLLM) | committed (dKV-Cache): approximate KV caches
    refresh: str = "all"  # all (Fast-dLLM) | last_block: what a block's first pass recomputes of the cache
    # target positions decoded; 0 = method_options.gen_length, the trained one. A length is a sampling
    # choice (LLaDA samples at other lengths than its SFT targets'): what training teaches is the </s>
    # padding after the text, so a task whose texts are short is decoded over fewer positions
    gen_length: int = 0
    batch_size: int = 100  # rows per forward pass

    def __post_init__(self) -> None:
        if min(self.steps - 1, self.temperature, self.block_length, self.batch_size - 1, self.gen_length) < 0:
            raise BadInput("bad MDM knob: need steps >= 1, temperature >= 0, block_length >= 0, batch_size >= 1, "
                           "gen_length >= 0")
        if self.decoder not in ("recipe", *DECODERS):
            raise BadInput(f"knob decoder must be one of recipe, {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.cache not in CACHES:
            raise BadInput(f"knob cache must be one of {', '.join(CACHES)}, got {self.cache!r}")
        if self.refresh not in REFRESHES:
            raise BadInput(f"knob refresh must be one of {', '.join(REFRESHES)}, got {self.refresh!r}")
        if not 0 <= self.threshold < 1 or self.remask_noise < 0:
            raise BadInput("bad MDM knob: need 0 <= threshold < 1 and remask_noise >= 0")
        if self.threshold > 0 and self.decoder == "easy_first":
            raise BadInput("knob threshold applies to the low_confidence decoder, not easy_first")
        if self.cache == "committed" and self.decoder == "easy_first":
            raise BadInput("knob cache=committed applies to the low_confidence decoder: easy_first re-predicts "
                           "committed tokens, so it needs their logits")
        if self.confidence not in CONFIDENCES:
            raise BadInput(f"knob confidence must be one of {', '.join(CONFIDENCES)}, got {self.confidence!r}")
        if self.confidence != "probability" and self.decoder == "easy_first":
            raise BadInput("knob confidence applies to the low_confidence decoder, not easy_first")
        if self.threshold > 0 and self.confidence == "entropy":
            raise BadInput("knob threshold is a probability (or a margin): it does not apply to confidence=entropy")


# ------------------------------------------------------------------------------------------ sequences
def prompt_ids(tokenizer, prompt: str) -> list[int]:
    return [tokenizer.bos_token_id, *tokenizer.encode(prompt, add_special_tokens=False)]


def encode_targets(tokenizer, references: Sequence[str], gen_length: int) -> tuple[torch.Tensor, int]:
    """(len(references), gen_length) targets `reference </s> </s> ...` and how many lost tokens to the cut."""
    eos = tokenizer.eos_token_id
    rows, truncated = [], 0
    for ids in tokenizer(list(references), add_special_tokens=False)["input_ids"]:
        ids = [*ids, eos]
        truncated += len(ids) > gen_length
        rows.append(ids[:gen_length] + [eos] * (gen_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long).view(len(rows), gen_length), truncated


def join_rows(tokenizer, prompts: Sequence[list[int]], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> prompt target` rows, prompts left-padded so every target fills the last columns; (ids, valid)."""
    ids, valid = pad_ids(prompts, tokenizer.pad_token_id, left=True, device=targets.device)
    return torch.cat([ids, targets], 1), torch.cat([valid, torch.ones_like(targets, dtype=torch.bool)], 1)


def target_rows(tokenizer, problems: Sequence[Problem], gen_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training's rows of `problems`: `<s> question` left-padded, then `reference </s> ...` filling the
    last `gen_length` columns; (ids, valid)."""
    targets, _ = encode_targets(tokenizer, [p["reference"] for p in problems], gen_length)
    return join_rows(tokenizer, [prompt_ids(tokenizer, p["prompt"]) for p in problems], targets)


def bidirectional_mask(keys_valid: torch.Tensor, dtype: torch.dtype, queries: int | None = None) -> torch.Tensor:
    """Additive (B, 1, Q, K) mask: every query attends to every non-padding key, before or after it
    (Q = K unless `queries` says how many positions are being run against cached keys)."""
    width = keys_valid.size(1) if queries is None else queries
    blocked = ~keys_valid[:, None, None, :].expand(-1, 1, width, -1)
    return torch.zeros(blocked.shape, dtype=dtype, device=keys_valid.device).masked_fill(blocked, torch.finfo(dtype).min)


def token_positions(valid: torch.Tensor) -> torch.Tensor:
    """Position ids counting valid tokens only, so left padding never moves the rotary positions."""
    return (valid.long().cumsum(1) - 1).clamp_min(0)


def last_logits(model, input_ids: torch.Tensor, valid: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits (B, keep, V) of the last `keep` positions under bidirectional attention."""
    out = model(input_ids=input_ids, attention_mask=bidirectional_mask(valid, model.dtype),
                position_ids=token_positions(valid), logits_to_keep=keep)
    return out.logits


# ------------------------------------------------------------------------------------------ training
def diffusion_loss(logits: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, target_length: float) -> torch.Tensor:
    """LLaDA's loss: CE of every masked token weighted 1/t, averaged over the rows' maskable positions.

    `logits` (B, K, V) are those of the last K positions of the rows, `labels` (B, S) the clean token
    at masked positions and IGNORE elsewhere (question, unmasked targets); position i-1 predicts token
    i. Dividing by the count of all maskable positions (B x `target_length`), not of masked ones,
    keeps the loss an unbiased estimate of the per-token bound on the negative log-likelihood.
    """
    ce = masked_cross_entropy(logits, labels)
    return (ce / t[:, None]).sum() / (labels.size(0) * target_length)


def mgdm_loss(logits: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, diffusion_steps: int) -> torch.Tensor:
    """MGDM's loss: each masked token's CE l reweighted by its difficulty, alpha (1 - e^-l)^gamma l,
    times the linear time weight T - tau (mask rate t = (tau + 1) / T, so T at the lowest rate and
    1 with everything masked), averaged over the masked tokens."""
    ce = masked_cross_entropy(logits, labels)
    focal = FOCAL_ALPHA * (1 - torch.exp(-ce)) ** FOCAL_GAMMA * ce  # alpha (1 - e^-l)^gamma l
    tau = t * diffusion_steps - 1
    weight = (diffusion_steps - tau)[:, None]
    masked = (labels[:, labels.size(1) - logits.size(1) + 1:] != IGNORE).sum().clamp_min(1)
    return (focal * weight).sum() / masked


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K-1) CE of the token each of the last K-1 positions' predecessors predicts; 0 where IGNORE."""
    predicted = labels[:, labels.size(1) - logits.size(1) + 1:]
    return F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), predicted, ignore_index=IGNORE, reduction="none")


def draw_mask_rates(recipe: str, rows: int, min_mask_rate: float, diffusion_steps: int,
                    device: torch.device | str) -> torch.Tensor:
    """Each row's mask rate: t ~ U(eps, 1) (LLaDA) or one of 1/T, 2/T, .., 1 (MGDM)."""
    if recipe == "llada":
        return min_mask_rate + (1 - min_mask_rate) * torch.rand(rows, device=device)
    return (torch.randint(0, diffusion_steps, (rows,), device=device) + 1).float() / diffusion_steps


def masked_diffusion_loss(model, clean: torch.Tensor, valid: torch.Tensor, maskable: torch.Tensor, mask_id: int,
                          target_length: float, recipe: str = "llada", min_mask_rate: float = LLADA_MIN_MASK_RATE,
                          diffusion_steps: int = 20) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss on rows `clean` (B, S): every `maskable` token masked at its row's rate t, the
    masked ones predicted from the rest under the recipe's loss. Needs no position before the first
    maskable one to be maskable (the logits before it predict it)."""
    rows = clean.size(0)
    t = draw_mask_rates(recipe, rows, min_mask_rate, diffusion_steps, clean.device)
    masked = maskable & (torch.rand(maskable.shape, device=clean.device) < t[:, None])
    noisy = clean.masked_fill(masked, mask_id)
    keep = clean.size(1) - int(maskable.float().argmax(1).min()) + 1  # from the position before the first maskable
    logits = last_logits(model, noisy, valid, keep)
    labels = clean.masked_fill(~masked, IGNORE)
    if recipe == "llada":
        loss = diffusion_loss(logits, labels, t, target_length)
    else:
        loss = mgdm_loss(logits, labels, t, diffusion_steps)
    return loss, {"mask_rate": float(masked.sum() / maskable.sum().clamp_min(1))}


def training_loss(model, tokenizer, problems: Sequence[Problem], gen_length: int, min_mask_rate: float,
                  device: torch.device | str, recipe: str = "llada",
                  diffusion_steps: int = 20) -> tuple[torch.Tensor, dict[str, float]]:
    """The fine-tuning loss: each row's target masked at its own rate, the question never."""
    clean, valid = (rows.to(device) for rows in target_rows(tokenizer, problems, gen_length))
    maskable = torch.zeros_like(valid)
    maskable[:, -gen_length:] = True
    return masked_diffusion_loss(model, clean, valid, maskable, tokenizer.convert_tokens_to_ids(MASK), gen_length,
                                 recipe, min_mask_rate, diffusion_steps)


def pretraining_loss(model, tokenizer, problems: Sequence[Problem], max_length: int,
                     device: torch.device | str) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked-diffusion base's loss (LLaDA's pre-training): the AR base's rows, `<s> question
    reasoning answer </s>`, every token after `<s>` maskable, LLaDA's loss averaged over the tokens."""
    batch = encode_pairs(tokenizer, [p["prompt"] for p in problems], [p["reference"] for p in problems], max_length,
                         loss_on_prompt=True, device=device)
    clean, valid = batch["input_ids"], batch["attention_mask"].bool()
    maskable = valid.clone()
    maskable[:, 0] = False  # <s>: the position that predicts the first token
    return masked_diffusion_loss(model, clean, valid, maskable, tokenizer.convert_tokens_to_ids(MASK),
                                 float(maskable.sum()) / clean.size(0))


register_base_objective(MASKED_DIFFUSION, BaseObjective(pretraining_loss, recipe=1))


# ------------------------------------------------------------------------------------------ sampling
def unmasking_schedule(length: int, steps: int) -> list[int]:
    """Tokens committed at each step so that the masked count falls linearly from `length` to 0."""
    remaining = [length * (steps - step) // steps for step in range(steps + 1)]
    return [before - after for before, after in zip(remaining, remaining[1:])]


def block_plan(gen_length: int, block_length: int, steps: int) -> list[tuple[int, int, int]]:
    """(start, end, steps) per semi-autoregressive block; the steps split as evenly as they go."""
    width = block_length or gen_length
    starts = range(0, gen_length, width)
    if steps < len(starts):
        raise BadInput(f"steps={steps} is fewer than the {len(starts)} blocks of block_length={block_length}")
    return [(start, min(start + width, gen_length), steps // len(starts) + (b < steps % len(starts)))
            for b, start in enumerate(starts)]


class ColumnLayer(CacheLayerMixin):
    """One layer's keys/values for every column of `question | target`, in column order. A forward pass
    over the columns [start, end) (`columns` = start), or over each row's own columns (`columns` a (B, Q)
    index), writes its fresh keys/values there, in place, and attends to every column: what it did not
    run is what was cached of it. The first pass runs every column and fills it."""

    def __init__(self, keys: torch.Tensor | None, values: torch.Tensor | None, columns: int | torch.Tensor):
        super().__init__()
        self.keys, self.values, self.columns, self.is_initialized = keys, values, columns, keys is not None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.keys, self.values, self.is_initialized = key_states, value_states, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        elif isinstance(self.columns, int):
            span = slice(self.columns, self.columns + key_states.size(-2))
            self.keys[:, :, span], self.values[:, :, span] = key_states, value_states
        else:  # (B, Q) columns; a row's repeated column is written twice with the same keys
            where = self.columns[:, None, :, None].expand(-1, key_states.size(1), -1, key_states.size(-1))
            self.keys.scatter_(2, where, key_states)
            self.values.scatter_(2, where, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:  # unused: the mask comes prepared (4D)
        return self.get_seq_length(), 0

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.size(-2)

    def get_max_length(self) -> int:
        return -1


class BlockLogits:
    """The logits that predict one block of target positions, computed in full or with an approximate
    KV cache (Fast-dLLM's or dKV-Cache's).

    Rows are `question | target`, the question left-padded; target position j is predicted by the
    logits of column P + j - 1 (P = question width), so block [start, end) needs the queries of
    columns [P + start - 1, P + end - 1) and fresh keys for columns [P + start - 1, P + end).
    `cache` "none" runs every column at every call. Otherwise the keys/values of every column are kept
    (`ColumnLayer`): a block's first call refreshes them and later calls run only the block's span
    ("dual"; "prefix": the span and every column after it), attending to what was kept of the columns
    outside it: those before the span (question, finished blocks) and, with "dual", those after it (the
    masked blocks to come). "committed" runs, of the target, only the masked columns, the columns
    before the block's masked positions (whose logits predict them) and the columns committed since
    the last call, so a committed token's keys are computed once with it in place and kept; the
    logits of the block's committed positions are then not computed (zeros). `refresh` "all"
    recomputes every column at a block's first call (Fast-dLLM); "last_block" recomputes only the
    block just finished and the new one.
    """

    def __init__(self, model, question: torch.Tensor, question_valid: torch.Tensor, gen_length: int,
                 cache: str = "none", refresh: str = "all", mask_id: int | None = None):
        if cache == "committed" and mask_id is None:
            raise ValueError("cache='committed' needs the mask id, to tell masked columns from committed ones")
        self.model, self.question, self.cache, self.refresh, self.mask_id = model, question, cache, refresh, mask_id
        self.valid = torch.cat([question_valid, question_valid.new_ones(question.size(0), gen_length)], 1)
        self.positions = token_positions(self.valid)
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer, every column's keys/values
        self.seen: torch.Tensor | None = None  # "committed": each row's columns as its kept keys last saw them
        self.first: int | None = None

    def start_block(self, start: int, end: int) -> None:
        self.finished_from = self.first  # the block just finished starts there (None before the first block)
        self.first, self.width = self.question.size(1) + start - 1, end - start
        self.last = self.question.size(1) + end if self.cache == "dual" else self.valid.size(1)
        self.refreshing = True

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (a boolean per row), e.g. those whose text has not ended yet."""
        self.question, self.valid, self.positions = self.question[rows], self.valid[rows], self.positions[rows]
        self.kept = [(keys[rows], values[rows]) for keys, values in self.kept]
        if self.seen is not None:
            self.seen = self.seen[rows]

    def __call__(self, target: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, end - start, V) logits of the block's target positions; with `rows` (a boolean per held
        row), those rows' only: a row whose block is finished runs no forward pass. With a cache, a
        block's first call runs every row, as it refreshes every row's cache."""
        if rows is not None and self.refreshing and self.cache != "none":
            return self(target)[rows]
        every = slice(None) if rows is None else rows
        question, valid, positions = self.question[every], self.valid[every], self.positions[every]
        ids = torch.cat([question, target[every]], 1)
        columns = ids.size(1)
        if self.cache == "none":
            out = self.model(input_ids=ids, attention_mask=bidirectional_mask(valid, self.model.dtype),
                             position_ids=positions, logits_to_keep=columns - self.first)
            return out.logits[:, :self.width]
        if self.cache == "committed" and not self.refreshing:
            return self._committed_pass(ids, valid, positions, rows)
        if not self.refreshing:
            run = (self.first, self.last)
        elif self.refresh == "all" or self.finished_from is None:
            run = (0, columns)
        else:
            run = (self.finished_from, self.last)
        # a row subset attends to a copy of its rows' keys/values: what it writes there is dropped, as
        # are a block's later calls' writes, which the next call or block refresh recomputes
        kept = [(keys[every], values[every]) for keys, values in self.kept] if rows is not None else self.kept
        layers = [ColumnLayer(keys, values, run[0]) for keys, values in kept] or [
            ColumnLayer(None, None, 0) for _ in range(self.model.config.num_hidden_layers)]
        span = slice(*run)
        out = self.model(input_ids=ids[:, span], position_ids=positions[:, span], past_key_values=Cache(layers=layers),
                         attention_mask=bidirectional_mask(valid, self.model.dtype, run[1] - run[0]), use_cache=True,
                         logits_to_keep=run[1] - self.first)
        if not self.kept:
            self.kept = [(layer.keys, layer.values) for layer in layers]
        if self.cache == "committed":
            self.seen = ids
        self.refreshing = False
        return out.logits[:, :self.width]

    def _committed_pass(self, ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor,
                        rows: torch.Tensor | None) -> torch.Tensor:
        """One "committed" call: each row runs its own columns, padded to the batch's longest list by
        repeating its last one (a row's logits are what they would be alone)."""
        target_from = self.first + 1
        masked = torch.zeros_like(ids, dtype=torch.bool)
        masked[:, target_from:] = ids[:, target_from:] == self.mask_id  # the question's padding is mask_id too
        predicting = torch.zeros_like(masked)
        predicting[:, self.first:self.first + self.width] = masked[:, target_from:target_from + self.width]
        seen = self.seen if rows is None else self.seen[rows]
        run = masked | predicting | (ids != seen)
        count = run.sum(1)
        order = run.to(torch.int8).sort(dim=1, descending=True, stable=True).indices  # run columns first, ascending
        slots = torch.arange(int(count.max()), device=ids.device)
        index = torch.where(slots < count[:, None], order[:, :len(slots)],
                            order.gather(1, (count - 1).clamp_min(0)[:, None]))
        if rows is None:
            kept = self.kept
        else:  # written back below: the cache keeps what this call computed
            kept = [(keys[rows], values[rows]) for keys, values in self.kept]
        layers = [ColumnLayer(keys, values, index) for keys, values in kept]
        out = self.model(input_ids=ids.gather(1, index), position_ids=positions.gather(1, index),
                         past_key_values=Cache(layers=layers), use_cache=True,
                         attention_mask=bidirectional_mask(valid, self.model.dtype, len(slots)))
        if rows is None:
            self.seen = ids
        else:
            for (keys, values), layer in zip(self.kept, layers, strict=True):
                keys[rows], values[rows] = layer.keys, layer.values
            self.seen[rows] = ids
        slot_of = torch.full_like(ids, -1).scatter_(1, index, slots.expand_as(index))
        wanted = slot_of[:, self.first:self.first + self.width]  # the slot of each block position's logits
        logits = out.logits.gather(1, wanted.clamp_min(0)[..., None].expand(-1, -1, out.logits.size(-1)))
        return logits.masked_fill(wanted[..., None] < 0, 0)


def ranks_of(scores: torch.Tensor, descending: bool) -> torch.Tensor:
    """Each entry's rank within its row (0 = first in the order), ties by position."""
    order = scores.sort(dim=1, descending=descending, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(scores.size(1), device=scores.device).expand_as(order))


def position_confidence(logits: torch.Tensor, drawn: torch.Tensor, confidence: str) -> torch.Tensor:
    """(M,) how sure the model is at each of M positions, from its (M, V) untempered logits."""
    probs = logits.float().softmax(-1)
    if confidence == "probability":
        return probs.gather(1, drawn[:, None]).squeeze(1)
    if confidence == "margin":
        top = probs.topk(2, dim=-1).values
        return top[:, 0] - top[:, 1]
    return (probs * probs.clamp_min(1e-30).log()).sum(-1)  # negative entropy


def low_confidence_step(block: torch.Tensor, logits: torch.Tensor, mask_id: int, remaining_after: int,
                        temperature: float, threshold: float, uniforms: torch.Tensor | None,
                        confidence: str = "probability") -> torch.Tensor:
    """LLaDA: draw every masked token, keep the most confident ones (each row down to
    `remaining_after` masked, and with `threshold` every one at least that confident, at least one)."""
    candidates = block == mask_id
    logits = logits[candidates]
    logits[:, mask_id] = float("-inf")  # never a training target; drawing it would leave a hole
    drawn = draw_tokens(logits, temperature, None if uniforms is None else uniforms[candidates])
    scores = torch.full(block.shape, float("-inf"), device=block.device)
    scores[candidates] = position_confidence(logits, drawn, confidence)
    masked = candidates.sum(1)
    count = (masked - remaining_after).clamp_min(0)
    if threshold > 0:
        count = torch.maximum(count, (scores >= threshold).sum(1)).clamp_min(1).minimum(masked)
    proposal = block.clone()
    proposal[candidates] = drawn
    commit = ranks_of(scores, descending=True) < count[:, None]
    return torch.where(commit, proposal, block)


def easy_first_step(logits: torch.Tensor, mask_id: int, t: int, steps: int, remask_noise: float,
                    uniforms: torch.Tensor | None) -> torch.Tensor:
    """MGDM's TopK: the argmax at every block position (committed ones too), then the floor(width t/T)
    lowest-scoring masked again, scores (log-probabilities) perturbed by Gumbel noise at remask_noise t/T."""
    logits = logits.float().clone()
    logits[..., mask_id] = float("-inf")
    scores, tokens = logits.log_softmax(-1).max(-1)
    remask = tokens.size(1) * t // steps
    if remask == 0:
        return tokens
    if uniforms is not None and remask_noise > 0:
        gumbel = -torch.log(-torch.log(uniforms.clamp(1e-8, 1 - 1e-8)))
        scores = scores + remask_noise * t / steps * gumbel
    return tokens.masked_fill(ranks_of(scores, descending=False) < remask, mask_id)


@torch.no_grad()
def unmasking_steps(model, prompts: Sequence[list[int]], gen_length: int, mask_id: int, steps: int,
                    temperature: float = 1.0, block_length: int = 0, noise: RowNoise | None = None,
                    decoder: str = "low_confidence", threshold: float = 0.0, remask_noise: float = 0.5,
                    cache: str = "none", refresh: str = "all", stop_id: int | None = None,
                    confidence: str = "probability") -> Iterator[torch.Tensor]:
    """Decode one row per prompt from a fully masked target; yields the targets after each step.

    low_confidence (LLaDA): positions ranked by `confidence` (`position_confidence`; by default the
    model's probability of the drawn token, untempered, as LLaDA). easy_first (MGDM): step j of a
    block's T re-predicts the block at MGDM's time t = T-1-j.
    A step with nothing to do (more steps than tokens, or a block finished early by `threshold`)
    runs no forward pass. With `stop_id` (`</s>`), a row whose text has ended before a block starts
    is not decoded further and the rest of its target is filled with `stop_id` (what follows the
    end is never read), as AR stops writing a finished row; once every row has ended, the filled
    targets are yielded once more and decoding stops. Row i draws with `noise`'s stream i: one
    uniform per (step, position), whatever the batch. The yielded tensors are copies.
    """
    device = next(model.parameters()).device
    rows = len(prompts)
    target = torch.full((rows, gen_length), mask_id, dtype=torch.long, device=device)
    question, question_valid = pad_ids(prompts, mask_id, left=True, device=device)  # padding is never attended to
    random = temperature > 0 if decoder == "low_confidence" else remask_noise > 0
    uniforms = noise.uniform(steps, gen_length).to(device) if random else None  # (B, steps, G)
    logits_of = BlockLogits(model, question, question_valid, gen_length, cache, refresh, mask_id)
    active = torch.arange(rows, device=device)  # the rows still being decoded
    step = 0
    for start, end, block_steps in block_plan(gen_length, block_length, steps):
        if stop_id is not None:
            ended = (target[active, :start] == stop_id).any(1)
            if bool(ended.any()):
                target[active[ended], start:] = stop_id
                active = active[~ended]
                logits_of.select(~ended)
            if not len(active):
                yield target.clone()
                return
        logits_of.start_block(start, end)
        remaining = [(end - start) * (block_steps - j) // block_steps for j in range(block_steps + 1)]
        for j in range(block_steps):
            block = target[active, start:end]
            step_uniforms = None if uniforms is None else uniforms[active, step, start:end]
            if decoder == "easy_first":
                target[active, start:end] = easy_first_step(logits_of(target[active]), mask_id, block_steps - 1 - j,
                                                            block_steps, remask_noise, step_uniforms)
            elif bool(((block == mask_id).sum(1) > (0 if threshold > 0 else remaining[j + 1])).any()):
                busy = (block == mask_id).any(1)  # rows whose block `threshold` finished early sit the step out
                # every row busy: no row selection, which would copy the cached keys/values of each layer
                target[active[busy], start:end] = low_confidence_step(
                    block[busy], logits_of(target[active], None if bool(busy.all()) else busy), mask_id,
                    remaining[j + 1], temperature, threshold,
                    None if step_uniforms is None else step_uniforms[busy], confidence)
            step += 1
            yield target.clone()


def decode_target(tokenizer, target: torch.Tensor) -> str:
    """The text up to the first `</s>` (the rest is the length padding the model learned)."""
    ids = target.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


# ------------------------------------------------------------------------------------------ the method
class MaskedDiffusion(Method):
    Options = MdmOptions
    SampleKnobs = MdmSampleKnobs
    phase_name = "mdm"
    stages = ("mdm",)
    base_objective = MASKED_DIFFUSION  # method_options.base may choose the AR base or scratch instead

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self._check_room(self.options.gen_length, "method_options.gen_length")

    def _check_room(self, gen_length: int, name: str) -> None:
        if gen_length >= self.ctx.config.model.max_length:
            raise BadInput(f"{name}={gen_length} leaves no room for the question "
                           f"within model.max_length={self.ctx.config.model.max_length}")

    @property
    def mask_id(self) -> int:
        return self.ctx.tokenizer.convert_tokens_to_ids(MASK)

    def train(self, stage: str | None = None) -> Path:
        if done := self.finished(self.phase_name):
            return done
        ctx, options = self.ctx, self.options
        self._report_targets()
        model = ctx.backbone.base_model()

        def loss_fn(step: int, shard: Shard):
            return training_loss(model, ctx.tokenizer, ctx.batch(self.phase_name, step, shard=shard), options.gen_length,
                                 options.min_mask_rate, ctx.device, options.recipe, options.diffusion_steps)

        final = Trainer(ctx.phase(self.phase_name, count_tokens=True), model).fit(loss_fn)
        self.model = model.eval()
        return final

    def _report_targets(self) -> None:
        """How many training references do not fit gen_length with their `</s>` (they are cut), in mdm/targets.json."""
        problems = self.ctx.train_problems()
        gen_length = self.options.gen_length
        _, truncated = encode_targets(self.ctx.tokenizer, [p["reference"] for p in problems], gen_length)
        if not distributed.is_main_process():  # every process counted the same; one writes and warns
            return
        directory = self.ctx.run_dir / self.phase_name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "targets.json").write_text(json.dumps({"gen_length": gen_length, "problems": len(problems),
                                                            "truncated": truncated}) + "\n")
        if truncated:
            console.print(f"[yellow]warning:[/] {truncated} of {len(problems)} training references do not fit "
                          f"gen_length={gen_length} with their </s> and are truncated")

    def load(self) -> None:
        self.model = load_final_model(self.ctx, self.phase_name)

    def sample_knobs(self, knobs: dict) -> MdmSampleKnobs:
        """The knobs, `decoder=recipe` resolved to the trained recipe's decoder and `gen_length=0` to the
        trained length."""
        settings = super().sample_knobs(knobs)
        resolved = {"decoder": RECIPE_DECODER[self.options.recipe]} if settings.decoder == "recipe" else {}
        if not settings.gen_length:
            resolved["gen_length"] = self.options.gen_length
        if resolved:
            settings = super().sample_knobs({**knobs, **resolved})
        self._check_room(settings.gen_length, "knob gen_length")
        block_plan(settings.gen_length, settings.block_length, settings.steps)  # fail before any sampling
        return settings

    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        settings = self.sample_knobs(knobs)
        tokenizer = self.ctx.tokenizer
        prompts = [prompt_ids(tokenizer, problem["prompt"]) for problem in problems]

        def run_batch(rows: list[Trajectory]) -> list[str]:
            *_, targets = self.unmasking([prompts[r.problem] for r in rows], RowNoise.of(rows), settings)
            return [decode_target(tokenizer, row) for row in targets]

        return self.sample_batched(problems, n, settings.batch_size, run_batch)

    def unmasking(self, prompts: Sequence[list[int]], noise: RowNoise,
                  settings: MdmSampleKnobs) -> Iterator[torch.Tensor]:
        """`unmasking_steps` under resolved knobs (`sample_knobs`): the targets after each step, a row
        whose text has ended stopping at the next block."""
        return unmasking_steps(self.model, prompts, settings.gen_length, self.mask_id, settings.steps,
                               settings.temperature, settings.block_length, noise, settings.decoder,
                               settings.threshold, settings.remask_noise, settings.cache, settings.refresh,
                               self.ctx.tokenizer.eos_token_id, settings.confidence)
