"""LD4LG-style latent diffusion (Lovelace et al. 2023, "Latent Diffusion for Language Generation")
applied to reasoning, as the LaDiR paper compares it (its "LD4LG" rows).

    autoencoder  one fixed-size latent (L x d_z) for the *whole* completion: reasoning and answer
                 together, with no sentence blocks; the decoder writes the completion from it
    diffusion    a denoiser conditioned on the question generates that latent in one piece: no
                 blocks, no causal order between steps, no answer loss reaching the latents
    sampling     noise -> latent (`steps` Euler steps, each conditioned on the previous step's
                 estimate of the clean latent) -> decoder -> text; the answer is read from the text

What it shares with LaDiR, and why that is faithful: the autoencoder is LaDiR's beta-VAE
(`ladir.vae.SentenceVAE`, LD4LG compresses a frozen LM's encoding into a fixed number of latents
and decodes with an LM the same way) applied to the whole completion instead of a sentence; the
denoiser is LaDiR's backbone with its latent input and velocity heads (`ladir.reasoner`) holding a
single block after the question, trained with the flow-matching loss only.

As LD4LG's own recipe: self-conditioning (Chen et al. 2023, "Analog Bits", which LD4LG uses with
p = 0.5): the previous estimate of the clean latent is a second input of the denoiser; in training,
with probability p, a first no-gradient pass predicts it and the trained pass conditions on it,
otherwise it is zero; in sampling each step conditions on the estimate of the step before (zero at
the first). The paper samples with 250 steps (a knob here, `steps`); the encoder can be frozen as LD4LG freezes BART's
(`vae_encoder: frozen`). Its autoencoder bounds it whatever the denoiser does: the share of test
completions that the decoder reproduces exactly from the encoder's own latent is stored in the run
(`autoencoder/ceiling-SPLIT.json`) and reported beside every evaluation (`reconstruction_ceiling`).

Two deviations from the original paper, both to keep the comparison to LaDiR about structure alone:
flow matching instead of LD4LG's v-prediction diffusion with a cosine schedule (the clean-latent
estimate is then z_t - t u), and the question read in context by the shared base LM instead of
through cross-attention to a separate encoder.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from harness.errors import BadInput
from harness.jsonl import write_json_atomic
from harness.lm import pad_ids
from harness.methods import Method
from harness.sampling import RowNoise, Trajectory
from harness.train import distributed
from harness.train.checkpoint import final_checkpoint, load_modules
from harness.train.seeding import Shard, seed_initialisation
from harness.train.trainer import Trainer
from ladir.pipeline import start_sequence
from ladir.probe import (
    REACH_T0,
    SHIFT_STEPS,
    TOLERANCE_SIGMAS,
    answer_accuracy,
    derangement,
    generated_step_validity,
)
from ladir.reasoner import (
    QUESTION,
    BlockDiffusionReasoner,
    Chunk,
    LatentSequence,
    ReasoningBatch,
    flow_matching_pair,
)
from ladir.sampler import FlowMatchEuler
from ladir.vae import (
    STATS_FILE,
    TABLE_MIN_EPOCHS,
    LatentStats,
    SentenceVAE,
    decoder_is_trained,
    encode_means,
    finish_vae_phase,
    finished_vae_phase,
    looked_up,
    tabulate_latents,
)
from tasks import Problem, Task


@dataclass
class LD4LGOptions:
    # The autoencoder: LaDiR's block (L_b = 4) times the 3-4 sentences of a Countdown-4 completion, so
    # both methods spend about the same latent capacity on a problem; LaDiR's VAE regularisers
    latent_tokens: int = 16
    latent_dim: int = 16
    beta: float = 1e-5
    latent_noise: float = 0.5
    token_replace_prob: float = 0.05
    max_text_tokens: int = 160  # completion tokens the autoencoder reads and writes
    vae_steps: int = 600  # the autoencoder's own budget, as LaDiR's VAE; the denoiser gets train.steps
    vae_lr: float = 2e-3
    vae_decoder: str = "auto"  # as LaDiR: "frozen", "trainable", "auto" (trained for a from-scratch tiny base)
    # "frozen": LD4LG's frozen BART encoder (only the latent queries and heads learn); "trainable": the
    # whole encoder LM learns, which a from-scratch tiny base needs as its decoder does
    vae_encoder: str = "trainable"
    stats_problems: int = 2000
    report_problems: int = 200
    self_condition: bool = True  # LD4LG's self-conditioning
    self_condition_prob: float = 0.5  # p: share of training steps that condition on a first pass's estimate

    def __post_init__(self) -> None:
        if self.latent_tokens < 1 or self.latent_dim < 1 or self.max_text_tokens < 1 or self.vae_steps < 0:
            raise BadInput("bad method_options value: latent_tokens, latent_dim, max_text_tokens >= 1, vae_steps >= 0")
        if self.vae_decoder not in ("auto", "frozen", "trainable"):
            raise BadInput("bad method_options value: vae_decoder must be auto, frozen or trainable")
        if self.vae_encoder not in ("frozen", "trainable"):
            raise BadInput("bad method_options value: vae_encoder must be frozen or trainable")
        if self.beta < 0 or self.latent_noise < 0 or not 0 <= self.token_replace_prob < 1:
            raise BadInput("bad method_options value: beta, latent_noise >= 0 and token_replace_prob in [0, 1)")
        if not 0 <= self.self_condition_prob <= 1:
            raise BadInput("bad method_options value: self_condition_prob must be in [0, 1]")


@dataclass
class LD4LGSampleKnobs:
    # Euler steps for the latent. The paper samples with 250; measured on tiny Countdown-4 they cost 10x
    # the time of 10 and did no better (baselines/README.md), so 10 by default
    steps: int = 10
    init_noise: float = 1.0  # z_1 ~ N(0, s^2 I); 0: the ODE from the noise's mode, a deterministic (greedy) decode
    batch_size: int = 100

    def __post_init__(self) -> None:
        if self.steps < 1 or self.init_noise < 0 or self.batch_size < 1:
            raise BadInput("bad LD4LG knob: need steps >= 1, init_noise >= 0, batch_size >= 1")


# ------------------------------------------------------------------------------------------ the denoiser
class SelfConditionedDenoiser(BlockDiffusionReasoner):
    """LaDiR's reasoner holding one latent block after the question, with LD4LG's self-conditioning input.

    LD4LG concatenates [z_t, x0_hat] before its input projection; a second linear map of x0_hat added
    to the latent input embedding is the same function. It has no bias, so a zero estimate (the first
    sampling step, the unconditioned half of training) is exactly the absent one.
    """

    def __init__(self, backbone: nn.Module, tokenizer, latent_tokens: int, latent_dim: int, self_condition: bool):
        super().__init__(backbone, tokenizer, latent_tokens, latent_dim)
        hidden = backbone.config.hidden_size
        self.self_cond_in = nn.Linear(latent_dim, hidden, bias=False) if self_condition else None

    def noisy_block(self, seq: LatentSequence, z_t: torch.Tensor, t: torch.Tensor | float,
                    x0_estimate: torch.Tensor | None) -> Chunk:
        """The block chunk of z_t at time t, its latent inputs plus W_sc x0_hat when an estimate is given."""
        chunk = seq.block_chunk(z_t, t)
        if self.self_cond_in is None or x0_estimate is None:
            return chunk
        conditioning = self.self_cond_in(x0_estimate).to(chunk.embeds.dtype)  # (B, L, H)
        batch, _, hidden = conditioning.shape
        before = conditioning.new_zeros(batch, self.latent_columns().start, hidden)  # <BOT>, [t]
        after = conditioning.new_zeros(batch, self.block_width - self.latent_columns().stop, hidden)  # <EOT>
        return replace(chunk, embeds=chunk.embeds + torch.cat([before, conditioning, after], dim=1))

    def predict(self, seq: LatentSequence, z_t: torch.Tensor, t: torch.Tensor | float,
                x0_estimate: torch.Tensor | None = None) -> torch.Tensor:
        """u_theta(z_t, t | question, x0_hat), (B, L, d_z), for the block after `seq`'s question."""
        hidden = seq.run(self.noisy_block(seq, z_t, t, x0_estimate), commit=False)
        return self.velocity_head(hidden[:, self.latent_columns()]).float()


def self_conditioned_fm_loss(denoiser: SelfConditionedDenoiser, question_ids: list[list[int]], z0: torch.Tensor,
                             self_condition_prob: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L_FM = || u_theta(z_t, t | q, x0_hat) - (eps - z_0) ||^2 for one latent per question.

    With probability p (one draw per batch, from the step's seeded generator, as LD4LG draws one per
    batch) x0_hat = z_t - t u is first predicted without self-conditioning and without gradient;
    otherwise x0_hat is absent (zero)."""
    seq = LatentSequence(denoiser, len(question_ids), cache=False)
    ids, valid = pad_ids(question_ids, denoiser.pad_id, left=True, device=denoiser.device)
    seq.append(seq.token_chunk(ids, valid, role=QUESTION))
    z0 = z0.to(denoiser.device)
    t = torch.rand(len(z0), device=denoiser.device)
    z_t, target = flow_matching_pair(z0, t, torch.randn_like(z0))
    x0_estimate = None
    if denoiser.self_cond_in is not None and float(torch.rand(())) < self_condition_prob:
        with torch.no_grad():
            x0_estimate = FlowMatchEuler.predicted_clean(denoiser.predict(seq, z_t, t), t[:, None, None], z_t)
    fm = ((denoiser.predict(seq, z_t, t, x0_estimate) - target) ** 2).mean()
    return fm, {"self_cond": float(x0_estimate is not None)}


@torch.no_grad()
def sample_latent(denoiser: SelfConditionedDenoiser, seq: LatentSequence, sampler: FlowMatchEuler, steps: int,
                  z: torch.Tensor, t_start: float = 1.0) -> torch.Tensor:
    """Euler steps from z_{t_start} = `z` (1: pure noise) to a clean latent; each step conditions on the
    previous step's x0_hat = z_t - t u (none at the first step, or without self-conditioning)."""
    sampler.set_timesteps(steps, t_start)
    x0_estimate = None
    for t in sampler.timesteps:
        u = denoiser.predict(seq, z, t, x0_estimate)
        if denoiser.self_cond_in is not None:
            x0_estimate = sampler.predicted_clean(u, t, z)
        z = sampler.step(u, t, z)
    return z


# ------------------------------------------------------------------------------------------ the ceiling
def ceiling_path(run_dir: Path, split: str) -> Path:
    return run_dir / "autoencoder" / f"ceiling-{split}.json"


def ceiling_summary(records: dict[str, dict[str, bool]], task_ids: list[str] | None = None) -> dict[str, float | int]:
    """Shares of exact reconstructions and of reconstructions the checker passes, over `task_ids` (default: all)."""
    chosen = [records[tid] for tid in (records if task_ids is None else task_ids)]
    count = max(1, len(chosen))
    return {"exact_match": sum(r["exact"] for r in chosen) / count, "passed": sum(r["passed"] for r in chosen) / count,
            "n_problems": len(chosen)}


@torch.no_grad()
def reconstruct(vae: SentenceVAE, task: Task, problems: list[Problem], batch_size: int = 256) -> dict[str, dict]:
    """task_id -> {exact, passed, decoded}: each reference completion decoded greedily from the
    encoder's own latent (its mean), compared exactly and checked."""
    records = {}
    for start in range(0, len(problems), batch_size):
        group = problems[start : start + batch_size]
        mu = encode_means(vae, LD4LG.text_pairs(group), batch_size)
        for problem, text in zip(group, vae.decode(mu), strict=True):
            records[problem["task_id"]] = {"exact": text == problem["reference"].strip(),
                                           "passed": task.check(problem, text).passed, "decoded": text}
    return records


class LD4LG(Method):
    Options = LD4LGOptions
    SampleKnobs = LD4LGSampleKnobs
    stages = ("autoencoder", "diffusion")
    oracle_table: dict[str, torch.Tensor] | None = None  # task_id -> its completion's latent, while training
    TABLE_MIN_EPOCHS: ClassVar[float] = TABLE_MIN_EPOCHS  # ladir.vae's, per class so a run or test can change it

    def _vae(self, encoder, decoder) -> SentenceVAE:
        o = self.options
        trained = decoder_is_trained(o.vae_decoder, self.ctx.config.model.from_scratch)
        vae = SentenceVAE(encoder, decoder, self.ctx.tokenizer, o.latent_tokens, o.latent_dim, beta=o.beta,
                          latent_noise=o.latent_noise, token_replace_prob=o.token_replace_prob,
                          max_sentence_tokens=o.max_text_tokens, train_decoder=trained).to(self.ctx.device)
        if o.vae_encoder == "frozen":  # gradients still reach the latent queries through its activations
            vae.encoder.requires_grad_(False)
        return vae

    def _denoiser(self, backbone) -> SelfConditionedDenoiser:
        o = self.options
        return SelfConditionedDenoiser(backbone, self.ctx.tokenizer, o.latent_tokens, o.latent_dim,
                                       o.self_condition).to(self.ctx.device)

    @staticmethod
    def text_pairs(problems: list[Problem]) -> list[tuple[str, str]]:
        """(question, whole completion): what one latent encodes."""
        return [(p["prompt"], p["reference"]) for p in problems]

    # ------------------------------------------------------------------------------- training
    def train(self, stage: str | None = None) -> Path:
        self.check_stage(stage)
        final = self.train_autoencoder()
        self.vae, self.stats = self._trained_vae()
        self.reconstruction_ceiling(self.ctx.task, self.ctx.config.eval.split)  # once, stored in the run
        if stage == "autoencoder":
            return final
        return self.train_diffusion()

    def train_autoencoder(self) -> Path:
        if done := finished_vae_phase(self, "autoencoder"):
            return done
        ctx, o = self.ctx, self.options
        backbone = ctx.backbone
        seed_initialisation(ctx.seed, "autoencoder")
        vae = self._vae(backbone.base_model(), backbone.base_model())
        phase = ctx.phase("autoencoder", steps=o.vae_steps, lr=o.vae_lr)
        final = Trainer(phase, vae).fit(lambda step, shard: vae.loss(self.text_pairs(ctx.batch("autoencoder", step, shard=shard))))
        held_out = [p for p in ctx.task.problems("val") if p.get("reference")][: o.report_problems]
        finish_vae_phase(vae, phase.directory, self.text_pairs(ctx.train_problems()[: o.stats_problems]),
                         {"split": "val", "pairs": self.text_pairs(held_out)})
        return final

    def _trained_vae(self) -> tuple[SentenceVAE, LatentStats]:
        backbone = self.ctx.backbone
        trained = decoder_is_trained(self.options.vae_decoder, self.ctx.config.model.from_scratch)
        vae = self._vae(backbone.fresh_model(), backbone.fresh_model() if trained else backbone.base_model())
        load_modules(vae, final_checkpoint(self.ctx.run_dir / "autoencoder")[1])
        vae.requires_grad_(False).eval()
        return vae, LatentStats.load(self.ctx.run_dir / "autoencoder" / STATS_FILE)

    def oracle_latents(self, problems: list[Problem]) -> torch.Tensor:
        """The normalised latent of each problem's whole completion, (N, L, d_z)."""
        if (tabled := looked_up(self.oracle_table, problems)) is not None:
            return torch.stack(tabled)
        return self.stats.normalize(encode_means(self.vae, self.text_pairs(problems)))

    def question_ids(self, problems: list[Problem]) -> list[list[int]]:
        """`<s> question` per problem: what the denoiser conditions on."""
        tok = self.ctx.tokenizer
        return [[tok.bos_token_id, *tok.encode(p["prompt"], add_special_tokens=False)] for p in problems]

    def oracle_batch(self, problems: list[Problem]) -> ReasoningBatch:
        """Each question with the normalised latent of its whole completion as its one and only block."""
        z0 = self.oracle_latents(problems)
        return ReasoningBatch(self.question_ids(problems), [[] for _ in problems], list(z0[:, None]))

    def train_diffusion(self) -> Path:
        """L_FM alone, self-conditioned: no spec head (there is always one latent), no answer loss into the latent."""
        if done := self.finished("diffusion"):
            return done
        ctx = self.ctx
        seed_initialisation(ctx.seed, "diffusion")
        denoiser = self._denoiser(ctx.backbone.base_model())
        prob = self.options.self_condition_prob

        def loss_fn(step: int, shard: Shard):
            batch = self.oracle_batch(ctx.batch("diffusion", step, shard=shard))
            return self_conditioned_fm_loss(denoiser, batch.question_ids, torch.cat(batch.blocks), prob)

        # the frozen autoencoder's latents, encoded once (`tabulate_latents`): about half a step's time
        self.oracle_table = tabulate_latents(ctx.train_problems(), self.oracle_latents, ctx.config.train,
                                             self.TABLE_MIN_EPOCHS)
        try:
            final = Trainer(ctx.phase("diffusion"), denoiser).fit(loss_fn)
        finally:
            self.oracle_table = None
        self.denoiser = denoiser.eval()
        return final

    # ------------------------------------------------------------------------------- the ceiling
    def reconstruction_ceiling(self, task: Task, split: str, problems: list[Problem] | None = None) -> dict:
        """The autoencoder's ceiling over `problems` (default: the split's, those with a reference):
        {exact_match, passed, n_problems}. Per-problem results are stored in the run the first time a
        problem is reconstructed (`autoencoder/ceiling-SPLIT.json`) and read back after that."""
        path = ceiling_path(self.ctx.run_dir, split)
        stored = json.loads(path.read_text()) if path.is_file() else {"split": split, "problems": {}}
        records = stored["problems"]
        problems = [p for p in (task.problems(split) if problems is None else problems) if p.get("reference")]
        missing = [p for p in problems if p["task_id"] not in records]
        if missing:
            fresh = reconstruct(self.vae, task, missing)
            records.update({tid: {"exact": r["exact"], "passed": r["passed"]} for tid, r in fresh.items()})
            stored.update(ceiling_summary(records))
            examples = stored.setdefault("mismatches", [])
            references = {p["task_id"]: p["reference"] for p in missing}
            examples += [{"task_id": tid, "reference": references[tid], "decoded": r["decoded"]}
                         for tid, r in fresh.items() if not r["exact"]][: max(0, 5 - len(examples))]
            if distributed.is_main_process():
                write_json_atomic(path, stored)
        return ceiling_summary(records, [p["task_id"] for p in problems])

    def metrics_beside(self, task: Task, split: str, problems: list[Problem]) -> dict[str, float]:
        """Reported beside the evaluation's Pass@k: the autoencoder's ceiling over the same problems."""
        ceiling = self.reconstruction_ceiling(task, split, problems)
        return {"reconstruction_ceiling": ceiling["exact_match"], "reconstruction_ceiling_pass": ceiling["passed"]}

    # ------------------------------------------------------------------------------- the probe
    @torch.no_grad()
    def probe_figures(self, task: Task, problems: list[Problem], steps: int = 10, seed: int = 0,
                      batch_size: int = 100) -> dict:
        """`ladir-bench probe` of an LD4LG run: where between its autoencoder's ceiling and its own
        samples the completions break. LaDiR's probe figures (ladir/probe.py), for one latent that
        holds the whole completion, each decoded greedily and judged by the checker:

            answer_acc_oracle     the encoder's own latent of the reference: the ceiling (pass rate)
            answer_acc_shuffled   another problem's latent (the decoder never reads the question)
            answer_acc_noise      a N(0, I) latent
            pass1_generated       the latent denoised from noise (`steps` Euler steps, self-conditioned)
            pass1_swapped         the latent generated for another problem
            block_valid           generated steps that are valid (operands available, arithmetic exact)
            decoder_tolerance     first step valid after the oracle latent plus N(0, sigma^2) noise
            denoise_reach         first step valid after the oracle latent noised to t0 is denoised in
                                  round(steps t0) Euler steps (t0 = 1: generation); `denoise_reach_pass`
                                  the same latents' completions passing the checker
            first_block_valid     first step valid of latents generated with 1, 5, 10, 30 Euler steps
        """
        perm = derangement(len(problems), seed)
        generator = torch.Generator().manual_seed(seed)
        z0 = self.oracle_latents(problems).cpu()
        eps = torch.randn(z0.shape, generator=generator)
        questions = self.question_ids(problems)

        def completions(z: torch.Tensor) -> list[str]:
            texts = []
            for start in range(0, len(problems), batch_size):
                texts += self.vae.decode(self.stats.denormalize(z[start : start + batch_size].to(self.ctx.device)))
            return texts

        @functools.cache
        def denoised(t0: float, euler_steps: int) -> list[str]:
            """The completions of the oracle latents noised to t0 and denoised (t0 = 1: generated from
            noise); cached, as generation, the reach at t0 = 1 and the step sweep share draws."""
            z_start, out = (1 - t0) * z0 + t0 * eps, []
            for start in range(0, len(problems), batch_size):
                seq = start_sequence(self.denoiser, questions[start : start + batch_size])
                out.append(sample_latent(self.denoiser, seq, FlowMatchEuler(), euler_steps,
                                         z_start[start : start + batch_size].to(self.ctx.device), t0).cpu())
            return completions(torch.cat(out))

        def first_step_valid(texts: list[str]) -> float:
            hits = 0
            for problem, text in zip(problems, texts, strict=True):
                sentences = task.split_target(text)[0]
                hits += bool(sentences) and bool((task.steps_valid(problem, sentences[:1]) or [False])[0])
            return hits / len(problems)

        generated = denoised(1.0, steps)
        result = {
            "answer_acc_oracle": answer_accuracy(task, problems, completions(z0)),
            "answer_acc_shuffled": answer_accuracy(task, problems, completions(z0[perm])),
            "answer_acc_noise": answer_accuracy(task, problems, completions(eps)),
            "pass1_generated": answer_accuracy(task, problems, generated),
            "pass1_swapped": answer_accuracy(task, problems, [generated[j] for j in perm]),
        }
        result.update(generated_step_validity(task, problems, [task.split_target(text)[0] for text in generated]))
        if "block_valid" in result:
            result["decoder_tolerance"] = {str(sigma): first_step_valid(completions(z0 + sigma * eps))
                                           for sigma in TOLERANCE_SIGMAS}
            reached = {str(t0): denoised(t0, max(1, round(steps * t0))) for t0 in (0.0, *REACH_T0)}
            result["denoise_reach"] = {t0: first_step_valid(texts) for t0, texts in reached.items()}
            result["denoise_reach_pass"] = {t0: answer_accuracy(task, problems, texts) for t0, texts in reached.items()}
            result["first_block_valid"] = {str(s): first_step_valid(denoised(1.0, s)) for s in SHIFT_STEPS}
        result["examples"] = [{"task_id": problem["task_id"], "reference": problem.get("reference"), "generated": text}
                              for problem, text in zip(problems[:3], generated[:3], strict=True)]
        return result

    # ------------------------------------------------------------------------------- sampling
    def load(self) -> None:
        self.vae, self.stats = self._trained_vae()
        denoiser = self._denoiser(self.ctx.backbone.fresh_model())
        load_modules(denoiser, final_checkpoint(self.ctx.run_dir / "diffusion")[1])
        self.denoiser = denoiser.requires_grad_(False).eval()

    def load_untrained(self) -> None:
        fresh = self.ctx.backbone.fresh_model
        self.vae = self._vae(fresh(), fresh()).requires_grad_(False).eval()
        self.stats = LatentStats.identity(self.options.latent_tokens, self.options.latent_dim)
        self.denoiser = self._denoiser(fresh()).requires_grad_(False).eval()

    @torch.no_grad()
    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        settings = self.sample_knobs(knobs)
        questions = self.question_ids(problems)
        shape = (self.options.latent_tokens, self.options.latent_dim)

        def run_batch(rows: list[Trajectory]) -> list[str]:
            seq = start_sequence(self.denoiser, [questions[r.problem] for r in rows])
            sampler = FlowMatchEuler(init_noise=settings.init_noise)
            z1 = settings.init_noise * RowNoise.of(rows, self.denoiser.device).normal(*shape)
            z = sample_latent(self.denoiser, seq, sampler, settings.steps, z1)
            return self.vae.decode(self.stats.denormalize(z))

        return self.sample_batched(problems, n, settings.batch_size, run_batch)
