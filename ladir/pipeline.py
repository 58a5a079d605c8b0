"""LaDiR generation (paper §3.3-3.4): the reasoner and the ODE sampler composed, block after block.

For each block: z_1 from the sampler's initial noise, the sampler's solver steps with the reasoner's
velocity (diversity guidance across the batch inside the sampler), then the finished block is
committed as a clean block (t = 0) and the spec head at its `<EOT>` decides `<BOT>` (another block) or `<SOA>`.
After `<SOA>` the LM head writes the answer token by token.

Blocks are causal, so the question and finished blocks are a fixed prefix: `LatentSequence` caches
their keys/values and each denoising step runs only the current block's L_b + 3 tokens, cropping the
cache back afterwards: every velocity evaluation of a step (a two-stage solver makes two) reuses
the same cached prefix. The same loop, with gradients kept, is stage 2's rollout.

Classifier-free guidance on the question (`uncond` below): a second sequence holds the same
blocks after `<s>` alone (the reasoner saw the question dropped with probability `cfg_drop` in
training) and the velocity is u = u_uncond + s (u_cond - u_uncond); s = 1 is plain conditional
sampling and skips the second pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.lm import pad_ids
from harness.sampling import RowNoise, draw_tokens
from ladir.reasoner import (
    QUESTION,
    BlockDiffusionReasoner,
    LatentSequence,
    stacked_blocks,
)
from ladir.sampler import FlowMatchSolver

# on_step(block, t, z_t, u): called at every velocity evaluation (the trace uses it)
StepHook = Callable[[int, float, torch.Tensor, torch.Tensor], None]
# project(block, z, active) -> z: what a finished block is replaced by before it is committed
BlockProjection = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def start_sequence(reasoner: BlockDiffusionReasoner, question_ids: list[list[int]],
                   cache: bool = True) -> LatentSequence:
    """A sequence holding the (left-padded) questions, ready for blocks. Each distinct question is run
    once and its rows share the result (the k samples of a problem)."""
    distinct = list(dict.fromkeys(map(tuple, question_ids)))
    seq = LatentSequence(reasoner, len(distinct), cache=cache)
    ids, valid = pad_ids([list(q) for q in distinct], reasoner.pad_id, left=True, device=reasoner.device)
    seq.run(seq.token_chunk(ids, valid, role=QUESTION))
    if len(distinct) < len(question_ids):
        row_of = {q: i for i, q in enumerate(distinct)}
        seq.select(torch.tensor([row_of[tuple(q)] for q in question_ids], device=reasoner.device))
    return seq


def unconditional_sequence(seq: LatentSequence) -> LatentSequence:
    """The CFG branch of `seq`: the same batch with the question dropped (`<s>` alone)."""
    return start_sequence(seq.reasoner, [[seq.reasoner.bos_id]] * seq.batch, cache=seq.cache)


def velocity(seq: LatentSequence, z: torch.Tensor, t: float, active: torch.Tensor,
             uncond: LatentSequence | None = None, cfg_scale: float = 1.0) -> torch.Tensor:
    """u(z_t, t) for the current block given the committed prefix; with CFG when `uncond` is given."""
    reasoner = seq.reasoner

    def predicted(branch: LatentSequence) -> torch.Tensor:
        hidden = branch.run(branch.block_chunk(z, t, active), commit=False)
        return reasoner.velocity_head(hidden[:, reasoner.latent_columns()]).float()

    u = predicted(seq)
    if uncond is None or cfg_scale == 1.0:
        return u
    u_uncond = predicted(uncond)
    return u_uncond + cfg_scale * (u - u_uncond)


def denoise_block(seq: LatentSequence, sampler: FlowMatchSolver, steps: int, active: torch.Tensor,
                  block: int = 0, on_step: StepHook | None = None, uncond: LatentSequence | None = None,
                  cfg_scale: float = 1.0, z: torch.Tensor | None = None, t_start: float = 1.0,
                  noise: RowNoise | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
    """One block from noise to a clean latent (B, L_b, d_z); rows not `active` are carried along unused.

    The initial noise is row i's next draw from `noise` (default: the global generator). `z` (with
    `t_start` < 1) starts from a partly noised latent instead (stage 2's rollouts from noised oracle
    blocks). `steps` is the number of velocity evaluations (NFE) spanning [t_start, 0]: the solver
    takes steps / its evaluations per step. `groups` (B,) names each row's question for guidance.
    """
    reasoner = seq.reasoner
    sampler.set_timesteps(steps, t_start)
    if z is None:
        shape = (reasoner.latent_tokens, reasoner.latent_dim)
        z = (sampler.initial_noise((seq.batch, *shape), device=reasoner.device) if noise is None
             else sampler.init_noise * noise.normal(*shape).to(reasoner.device))
    for t in sampler.timesteps:
        u = velocity(seq, z, t, active, uncond, cfg_scale)
        if on_step is not None:
            on_step(block, t, z, u)
        if bool(active.all()):
            z = sampler.step(u, t, z, groups)
        else:  # guidance only among the trajectories still reasoning
            z = z.clone()
            z[active] = sampler.step(u[active], t, z[active], None if groups is None else groups[active])
    return z


def commit_block(seq: LatentSequence, z: torch.Tensor, active: torch.Tensor,
                 uncond: LatentSequence | None = None) -> torch.Tensor:
    """Append the finished block as a clean block (t = 0); returns the spec logit p(next = <SOA>) at its <EOT>."""
    reasoner = seq.reasoner
    hidden = seq.run(seq.block_chunk(z, 0.0, active), commit=True)
    if uncond is not None:
        uncond.run(uncond.block_chunk(z, 0.0, active), commit=True)
    return reasoner.spec_head(hidden[:, reasoner.eot_column()]).squeeze(-1).float()


def commit_blocks(seq: LatentSequence, blocks: list[torch.Tensor]) -> None:
    """Commit given blocks (row i: (N_i, L_b, d_z), N_i may differ) as each row's finished reasoning."""
    reasoner = seq.reasoner
    z, present = stacked_blocks(blocks, (reasoner.latent_tokens, reasoner.latent_dim), reasoner.device)
    for b in range(max((len(rows) for rows in blocks), default=0)):
        commit_block(seq, z[:, b], present[:, b])


@torch.no_grad()
def generate_blocks(seq: LatentSequence, sampler: FlowMatchSolver, steps: int, max_blocks: int,
                    on_step: StepHook | None = None, cfg_scale: float = 1.0, noise: RowNoise | None = None,
                    groups: torch.Tensor | None = None,
                    project: BlockProjection | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks until each row's spec head says <SOA> (or max_blocks): latents (B, N, L_b, d_z), presence (B, N).

    Row i's initial noises are its stream's draws from `noise` (default: the global generator);
    guidance acts within `groups` (default: the whole batch is one question). `project` replaces each
    finished block before it is committed (LaDiR's `reencode` knob: the VAE code of its sentence)."""
    active = torch.ones(seq.batch, dtype=torch.bool, device=seq.reasoner.device)
    uncond = unconditional_sequence(seq) if cfg_scale != 1.0 else None
    blocks, present = [], []
    for b in range(max_blocks):
        z = denoise_block(seq, sampler, steps, active, b, on_step, uncond, cfg_scale, noise=noise, groups=groups)
        if project is not None:
            z = project(b, z, active)
        spec_logit = commit_block(seq, z, active, uncond)
        blocks.append(z)
        present.append(active.clone())
        active = active & (spec_logit <= 0)  # p(<SOA>) < 0.5: another <BOT>
        if not bool(active.any()):
            break
    return torch.stack(blocks, 1), torch.stack(present, 1)


@torch.no_grad()
def decode_answer(seq: LatentSequence, max_tokens: int, temperature: float,
                  noise: RowNoise | None = None) -> list[list[int]]:
    """`<SOA>`, then the answer autoregressively (cached), until `</s>`; returns the answer token ids.

    Row i draws its tokens with `noise`'s stream i (default: the global generator). Rows that finish
    are dropped from `seq` once a quarter of those left has (as AR sampling does), so short answers
    stop costing compute; `seq` is consumed."""
    reasoner = seq.reasoner
    rows = seq.batch
    uniforms = None
    if temperature > 0:
        uniforms = (torch.rand(rows, max_tokens) if noise is None else noise.uniform(max_tokens)).to(reasoner.device)
    alive = torch.arange(rows, device=reasoner.device)  # the original row of each row still in `seq`
    ids = torch.full((rows, 1), reasoner.soa_id, dtype=torch.long, device=reasoner.device)
    answers = torch.full((rows, max_tokens), reasoner.eos_id, dtype=torch.long, device=reasoner.device)
    for step in range(max_tokens):
        logits = reasoner.lm_logits(seq.run(seq.token_chunk(ids))[:, -1]).float()
        token = draw_tokens(logits, temperature, None if uniforms is None else uniforms[alive, step])
        answers[alive, step] = token
        going = token != reasoner.eos_id
        if not bool(going.any()):
            break
        if (~going).sum() * 4 >= len(alive):
            keep = going.nonzero().squeeze(1)
            seq.select(keep)
            alive, token = alive[keep], token[keep]
        ids = token[:, None]
    return [row[: row.index(reasoner.eos_id)] if reasoner.eos_id in row else row for row in answers.tolist()]
