"""LaDiR's block diffusion reasoner (paper §3.2-3.3): one backbone denoises latent blocks and writes the answer.

Sequence (one row):

    <s> question | <BOT> [t] z_1 .. z_Lb <EOT> | <BOT> [t] z_1 .. z_Lb <EOT> | ... | <SOA> The answer is ... </s>

Inputs enter as `inputs_embeds`: tokens through the backbone's embeddings, the timestep token as a
sinusoidal embedding of t through an MLP, latents through Linear(d_z -> hidden). Outputs: a velocity
head Linear(hidden -> d_z) at latent positions, a binary spec head at each `<EOT>` (next is `<BOT>`
or `<SOA>`), and the backbone's LM head for the answer.

Attention (`block_attention_mask`): causal over the question and the answer, causal between blocks,
bidirectional inside a block. Every position carries four numbers and the mask is one rule over them:

    query i sees key j  <=>  group[i] == group[j]  or  (visible[j] and position[j] < start[i])

`group` is shared by the tokens of one block and unique for every other position; `start` is the
first position of i's block (its own position for a question/answer token); `visible` is false for
padding and for the noisy block copies of teacher forcing, which nothing else may see. `role` (question,
block, answer) adds one optional rule: with `answer_sees_question=False` answer tokens do not attend to
the question tokens, so whatever the answer takes from the question has to pass through the blocks'
hidden states (which do see it). An ablation of how much the answer leans on the question directly;
the paper's answer sees both.

Teacher forcing uses the block-diffusion trick: after the clean sequence come noisy copies of every
block, placed at their clean block's positions and seeing the question, the clean blocks before
them and themselves, so one forward pass gives a flow-matching target for every block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from harness.backbone import BOT, EOT, SOA
from harness.lm import pad_ids


# ------------------------------------------------------------------------------------------ modules
class TimestepEmbedding(nn.Module):
    """The timestep token: sinusoidal features of t in [0, 1], then an MLP to the hidden size."""

    def __init__(self, hidden: int, frequencies: int = 64, scale: float = 1000.0):
        super().__init__()
        self.frequencies, self.scale = frequencies, scale
        self.mlp = nn.Sequential(nn.Linear(2 * frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(self.frequencies, device=t.device) / self.frequencies)
        angles = self.scale * t.float()[..., None] * freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.mlp[0].weight.dtype))


QUESTION, BLOCK, ANSWER = 0, 1, 2  # Chunk.role


class BlockDiffusionReasoner(nn.Module):
    """The backbone plus LaDiR's input maps (timestep, latents) and output heads (velocity, spec)."""

    def __init__(self, backbone: nn.Module, tokenizer, latent_tokens: int, latent_dim: int,
                 answer_sees_question: bool = True):
        super().__init__()
        hidden = backbone.config.hidden_size
        self.backbone = backbone
        self.latent_tokens, self.latent_dim = latent_tokens, latent_dim
        self.answer_sees_question = answer_sees_question
        self.time_embed = TimestepEmbedding(hidden)
        self.latent_in = nn.Linear(latent_dim, hidden)  # z -> input embedding
        self.velocity_head = nn.Linear(hidden, latent_dim)  # u_theta(z_t, t) at latent positions
        self.spec_head = nn.Linear(hidden, 1)  # logit of p(next = <SOA>) at each <EOT>
        ids = tokenizer.convert_tokens_to_ids([BOT, EOT, SOA])
        self.bot_id, self.eot_id, self.soa_id = ids
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    @property
    def device(self) -> torch.device:
        return self.latent_in.weight.device

    @property
    def block_width(self) -> int:
        return self.latent_tokens + 3  # <BOT> [t] z_1..z_Lb <EOT>

    def latent_columns(self) -> slice:
        return slice(2, 2 + self.latent_tokens)

    def eot_column(self) -> int:
        return self.latent_tokens + 2

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)

    def embed_block(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, L_b + 3, H): <BOT>, timestep token of t (B,), Linear(z) for z (B, L_b, d_z), <EOT>."""
        batch = z.size(0)
        bot = self.embed_tokens(torch.full((batch, 1), self.bot_id, device=z.device))
        eot = self.embed_tokens(torch.full((batch, 1), self.eot_id, device=z.device))
        time = self.time_embed(t)[:, None].to(bot.dtype)
        return torch.cat([bot, time, self.latent_in(z).to(bot.dtype), eot], dim=1)

    def transformer(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                    cache: DynamicCache | None = None) -> torch.Tensor:
        """Last hidden states of the backbone for a 4-D additive mask and explicit positions."""
        out = self.backbone.base_model(inputs_embeds=embeds, attention_mask=mask.to(embeds.dtype),
                                       position_ids=positions, past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_output_embeddings()(hidden)

    @torch.no_grad()
    def read_latents_like(self, to_prefix: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set `latent_in` to the VAE's latent-to-embedding map, taking normalised latents.

        The diffusion model works on z = (mu - mean) / std, the decoder was trained on mu, so
        latent_in(z) = W (z * std + mean) + b. `latent_in` is shared by the L_b slots, so the
        per-slot statistics are averaged over slots. With the backbone started from the decoder's
        weights, a clean block then enters the reasoner as the decoder's own prefix would.
        """
        std, mean = std.float().mean(0).to(self.device), mean.float().mean(0).to(self.device)
        weight = to_prefix.weight.float().to(self.device)
        self.latent_in.weight.copy_(weight * std[None, :])
        self.latent_in.bias.copy_(to_prefix.bias.float().to(self.device) + weight @ mean)


# ------------------------------------------------------------------------------------------ the mask
@dataclass
class Chunk:
    """A run of columns of a batch: their embeddings and the attention metadata of each position."""

    embeds: torch.Tensor | None  # (B, n, H); None once its keys/values are cached
    position: torch.Tensor  # (B, n) position ids (RoPE)
    group: torch.Tensor  # (B, n) same group <=> bidirectional
    start: torch.Tensor  # (B, n) visible keys at positions < start are attended; -1 for padding
    visible: torch.Tensor  # (B, n) bool: may later positions attend to it
    role: torch.Tensor  # (B, n) QUESTION, BLOCK or ANSWER


CHUNK_FIELDS = ("position", "group", "start", "visible", "role")


def block_attention_mask(query: Chunk | dict, key: Chunk | dict, answer_sees_question: bool = True) -> torch.Tensor:
    """Additive mask (B, 1, Q, K), 0 = attend, -inf = blocked: same block, or a visible earlier key."""
    q = query if isinstance(query, dict) else vars(query)
    k = key if isinstance(key, dict) else vars(key)
    same_group = q["group"][:, :, None] == k["group"][:, None, :]
    earlier = k["visible"][:, None, :] & (k["position"][:, None, :] < q["start"][:, :, None])
    if not answer_sees_question:
        earlier &= ~((q["role"][:, :, None] == ANSWER) & (k["role"][:, None, :] == QUESTION))
    allowed = same_group | earlier
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    return mask.masked_fill(~allowed, float("-inf"))[:, None]


@dataclass
class LatentSequence:
    """A batch of LaDiR sequences built column chunk by column chunk, run whole or incrementally.

    `append` adds a chunk; `forward` runs everything appended in one pass (teacher forcing).
    `run(chunk, commit)` runs only the new chunk against what is already there: with `cache=True` the
    keys/values of committed chunks are cached and a chunk run with `commit=False` (a denoising
    step) is cropped back out; with `cache=False` the whole sequence is recomputed each time, the
    reference the cached path must match.
    """

    reasoner: BlockDiffusionReasoner
    batch: int
    cache: bool = True
    chunks: list[Chunk] = field(default_factory=list)
    kv: DynamicCache | None = None

    def __post_init__(self):
        device = self.reasoner.device
        self.next_position = torch.zeros(self.batch, dtype=torch.long, device=device)
        self.next_group = 0
        if self.cache:
            self.kv = DynamicCache()

    def _groups(self, n: int) -> torch.Tensor:
        groups = torch.arange(self.next_group, self.next_group + n, device=self.reasoner.device)
        self.next_group += n
        return groups[None].expand(self.batch, n)

    # ---------------------------------------------------------------- chunks
    def token_chunk(self, ids: torch.Tensor, valid: torch.Tensor | None = None, role: int = ANSWER) -> Chunk:
        """Causal tokens (question, <SOA>, answer); invalid entries are padding (left or right)."""
        valid = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid
        position = self.next_position[:, None] + valid.long().cumsum(1) - 1
        return Chunk(self.reasoner.embed_tokens(ids), position.clamp_min(0), self._groups(ids.size(1)),
                     torch.where(valid, position, -1), valid, torch.full_like(ids, role))

    def block_chunk(self, z: torch.Tensor, t: torch.Tensor | float, active: torch.Tensor | None = None,
                    visible: bool = True, position: torch.Tensor | None = None) -> Chunk:
        """One latent block per row: bidirectional inside, one group; rows not `active` are padding."""
        n = self.reasoner.block_width
        device = z.device
        active = torch.ones(self.batch, dtype=torch.bool, device=device) if active is None else active
        t = torch.full((self.batch,), float(t), device=device) if not torch.is_tensor(t) else t.expand(self.batch)
        if position is None:
            position = self.next_position[:, None] + torch.arange(n, device=device)
        groups = self._groups(n + 1)
        group = torch.where(active[:, None], groups[:, :1], groups[:, 1:])  # padding: a group per column
        start = torch.where(active[:, None], position[:, :1], -1).expand(-1, n)
        vis = (active & visible)[:, None].expand(-1, n)
        return Chunk(self.reasoner.embed_block(z, t), position, group, start, vis, torch.full_like(position, BLOCK))

    # ---------------------------------------------------------------- running
    def append(self, chunk: Chunk, advance: bool = True) -> None:
        """Add a chunk after the others; `advance=False` for chunks placed at earlier positions (noisy copies)."""
        if advance:
            last = chunk.position.masked_fill(~chunk.visible, -1).amax(1)
            self.next_position = torch.maximum(self.next_position, last + 1)
        if self.cache:  # its keys/values live in the cache; keep only the mask metadata
            chunk = Chunk(None, *(getattr(chunk, name) for name in CHUNK_FIELDS))
        self.chunks.append(chunk)

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) the given rows: one question's prefix run once, shared by its samples."""
        if self.kv is not None:
            self.kv.batch_select_indices(rows)
        self.chunks = [Chunk(None if c.embeds is None else c.embeds[rows], *(getattr(c, f)[rows] for f in CHUNK_FIELDS))
                       for c in self.chunks]
        self.next_position = self.next_position[rows]
        self.batch = len(rows)

    def _cat(self, chunks: list[Chunk], names=CHUNK_FIELDS) -> dict:
        return {name: torch.cat([getattr(c, name) for c in chunks], dim=1) for name in names}

    def mask(self, query: Chunk | dict, key: Chunk | dict) -> torch.Tensor:
        return block_attention_mask(query, key, self.reasoner.answer_sees_question)

    def metadata(self) -> dict:
        """Position, group, start and visibility of every appended column, (B, S) each."""
        return self._cat(self.chunks)

    def forward(self) -> torch.Tensor:
        """Hidden states of every appended column in one pass (no cache)."""
        assert not self.cache, "forward() runs a whole uncached sequence; use run() with the cache"
        whole = self._cat(self.chunks, ("embeds", *CHUNK_FIELDS))
        return self.reasoner.transformer(whole["embeds"], self.mask(whole, whole), whole["position"])

    def run(self, chunk: Chunk, commit: bool = True) -> torch.Tensor:
        """Hidden states of `chunk`'s columns given everything committed before it."""
        if self.cache:
            mask = self.mask(chunk, self._cat([*self.chunks, chunk]))
            hidden = self.reasoner.transformer(chunk.embeds, mask, chunk.position, self.kv)
            if commit:
                self.append(chunk)
            else:
                self.kv.crop(-chunk.embeds.size(1))  # back to the committed prefix
            return hidden
        width = chunk.embeds.size(1)
        whole = self._cat([*self.chunks, chunk], ("embeds", *CHUNK_FIELDS))
        hidden = self.reasoner.transformer(whole["embeds"], self.mask(whole, whole), whole["position"])
        if commit:
            self.append(chunk)
        return hidden[:, -width:]


# ------------------------------------------------------------------------------------------ batches
@dataclass
class ReasoningBatch:
    """Tokenised questions/answers and oracle block latents (normalised) for a batch of problems."""

    question_ids: list[list[int]]  # <s> prompt
    answer_ids: list[list[int]]  # The answer is ... </s>   (without <SOA>)
    blocks: list[torch.Tensor]  # per row (B_i, L_b, d_z), B_i may be 0

    def __len__(self) -> int:
        return len(self.question_ids)

    @property
    def num_blocks(self) -> torch.Tensor:
        return torch.tensor([len(b) for b in self.blocks])


def stacked_blocks(rows: list[torch.Tensor], latent_shape: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row blocks (N_i, L_b, d_z) as (B, B_max, L_b, d_z) latents (zeros where a row has fewer
    blocks; at least one slot) and (B, B_max) presence."""
    most = max(1, *(len(blocks) for blocks in rows)) if rows else 1
    z0 = torch.zeros(len(rows), most, *latent_shape, device=device)
    present = torch.zeros(len(rows), most, dtype=torch.bool, device=device)
    for i, blocks in enumerate(rows):
        z0[i, : len(blocks)] = blocks.to(device)
        present[i, : len(blocks)] = True
    return z0, present


def answer_chunk_ids(reasoner: BlockDiffusionReasoner, batch: ReasoningBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """`<SOA> The answer is ... </s>`, right-padded."""
    rows = [[reasoner.soa_id, *answer] for answer in batch.answer_ids]
    return pad_ids(rows, reasoner.pad_id, left=False, device=reasoner.device)


def answer_loss(reasoner: BlockDiffusionReasoner, hidden: torch.Tensor, ids: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
    """L_Ans = -sum_w log p(y_w | q, Z, y_<w), mean over answer tokens; column k predicts token k+1."""
    targets = ids[:, 1:].masked_fill(~valid[:, 1:], -100)
    logits = reasoner.lm_logits(hidden[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)


def flow_matching_pair(z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_t = (1 - t) z_0 + t eps and the target velocity u* = eps - z_0; t broadcasts over trailing dims."""
    t = t.reshape(*t.shape, *([1] * (z0.dim() - t.dim())))
    return (1 - t) * z0 + t * noise, noise - z0


@dataclass
class TeacherForcing:
    """The stage-1 sequence of a batch and where its parts are: clean blocks, answer, noisy block copies."""

    seq: LatentSequence
    question_width: int
    blocks: int  # block slots (max blocks in the batch)
    answer_ids: torch.Tensor
    answer_valid: torch.Tensor
    present: torch.Tensor  # (B, blocks)
    target: torch.Tensor  # (B, repeats, blocks, L_b, d_z): eps - z_0


def teacher_forcing_sequence(reasoner: BlockDiffusionReasoner, batch: ReasoningBatch,
                             fm_repeats: int = 1) -> TeacherForcing:
    """question (left-padded) | clean blocks (t = 0) | <SOA> answer | noisy copies of every block.

    Noisy copy b sits at clean block b's positions with its own t ~ U(0, 1), sees the question, the
    clean blocks before b and itself, and is seen by nothing. `fm_repeats` copies of every block (each
    with its own t and noise) give that many flow-matching samples per block for one pass over the
    clean prefix (the official code draws 8).
    """
    device = reasoner.device
    seq = LatentSequence(reasoner, len(batch), cache=False)
    question, q_valid = pad_ids(batch.question_ids, reasoner.pad_id, left=True, device=device)
    seq.append(seq.token_chunk(question, q_valid, role=QUESTION))
    z0, present = stacked_blocks(batch.blocks, (reasoner.latent_tokens, reasoner.latent_dim), device)
    clean_positions = []
    for b in range(z0.size(1)):
        chunk = seq.block_chunk(z0[:, b], 0.0, present[:, b])  # clean blocks carry t = 0
        clean_positions.append(chunk.position)
        seq.append(chunk)
    ids, a_valid = answer_chunk_ids(reasoner, batch)
    seq.append(seq.token_chunk(ids, a_valid))
    repeated = z0[:, None].expand(-1, fm_repeats, *z0.shape[1:])
    t = torch.rand(repeated.shape[:3], device=device)  # one t per block copy
    z_t, target = flow_matching_pair(repeated, t, torch.randn_like(repeated))
    for r in range(fm_repeats):
        for b in range(z0.size(1)):
            noisy = seq.block_chunk(z_t[:, r, b], t[:, r, b], present[:, b], visible=False, position=clean_positions[b])
            seq.append(noisy, advance=False)
    return TeacherForcing(seq, question.size(1), z0.size(1), ids, a_valid, present, target)


def teacher_forcing_losses(reasoner: BlockDiffusionReasoner, batch: ReasoningBatch, answer: bool = True,
                           fm_repeats: int = 1) -> dict[str, torch.Tensor]:
    """Stage-1 losses from one forward pass: L_FM on the noisy copies, L_Spec at clean <EOT>s, L_Ans."""
    tf = teacher_forcing_sequence(reasoner, batch, fm_repeats)
    hidden = tf.seq.forward()
    rows, width, most = len(batch), reasoner.block_width, tf.blocks
    blocks_end = tf.question_width + most * width
    answer_end = blocks_end + tf.answer_ids.size(1)
    clean = hidden[:, tf.question_width : blocks_end].reshape(rows, most, width, -1)
    noisy = hidden[:, answer_end:].reshape(rows, fm_repeats, most, width, -1)
    present = tf.present

    velocity = reasoner.velocity_head(noisy[..., reasoner.latent_columns(), :]).float()
    fm = ((velocity - tf.target) ** 2).mean((-1, -2)).mean(1)  # L_FM = || u_theta(z_t, t) - (eps - z_0) ||^2
    losses = {"fm": fm[present].mean() if present.any() else fm.sum() * 0}
    spec_logit = reasoner.spec_head(clean[:, :, reasoner.eot_column()]).squeeze(-1).float()
    is_last = torch.arange(most, device=hidden.device)[None] == (present.sum(1, keepdim=True) - 1)  # next is <SOA>
    spec = F.binary_cross_entropy_with_logits(spec_logit, is_last.float(), reduction="none")  # L_Spec
    losses["spec"] = spec[present].mean() if present.any() else spec.sum() * 0
    if answer:
        losses["ans"] = answer_loss(reasoner, hidden[:, blocks_end:answer_end], tf.answer_ids, tf.answer_valid)
    return losses
