"""LD4LG-style latent diffusion (Lovelace et al. 2023, "Latent Diffusion for Language Generation")
applied to reasoning, as the LaDiR paper compares it (its "LD4LG" rows).

    autoencoder  one fixed-size latent (L x d_z) for the *whole* completion: reasoning and answer
                 together, with no sentence blocks; the decoder writes the completion from it
    diffusion    a denoiser conditioned on the question generates that latent in one piece: no
                 blocks, no causal order between steps, no answer loss reaching the latents
    sampling     noise -> latent (Euler steps) -> decoder -> text; the answer is read from the text

What it shares with LaDiR, and why that is faithful: the autoencoder is LaDiR's beta-VAE
(`ladir.vae.SentenceVAE`, LD4LG compresses a frozen LM's encoding into a fixed number of latents
and decodes with an LM the same way) applied to the whole completion instead of a sentence; the
denoiser is LaDiR's backbone with its latent input and velocity heads (`ladir.reasoner`) holding a
single block after the question, trained with the flow-matching loss only. Two deviations from the
original paper, both to keep the comparison to LaDiR about structure alone: flow matching instead of
LD4LG's v-prediction diffusion with a cosine schedule, and the question read in context by the
shared base LM instead of through cross-attention to a separate encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import BadInput
from harness.methods import Method
from harness.sampling import RowNoise, Trajectory
from harness.train.checkpoint import final_checkpoint, load_modules
from harness.train.seeding import Shard
from harness.train.trainer import Trainer
from ladir.pipeline import denoise_block, start_sequence
from ladir.reasoner import (
    BlockDiffusionReasoner,
    ReasoningBatch,
    teacher_forcing_losses,
)
from ladir.sampler import FlowMatchEuler
from ladir.vae import (
    STATS_FILE,
    LatentStats,
    SentenceVAE,
    decoder_is_trained,
    encode_means,
    finish_vae_phase,
    finished_vae_phase,
)
from tasks import Problem


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
    stats_problems: int = 2000
    report_problems: int = 200

    def __post_init__(self) -> None:
        if self.latent_tokens < 1 or self.latent_dim < 1 or self.max_text_tokens < 1 or self.vae_steps < 0:
            raise BadInput("bad method_options value: latent_tokens, latent_dim, max_text_tokens >= 1, vae_steps >= 0")
        if self.vae_decoder not in ("auto", "frozen", "trainable"):
            raise BadInput("bad method_options value: vae_decoder must be auto, frozen or trainable")
        if self.beta < 0 or self.latent_noise < 0 or not 0 <= self.token_replace_prob < 1:
            raise BadInput("bad method_options value: beta, latent_noise >= 0 and token_replace_prob in [0, 1)")


@dataclass
class LD4LGSampleKnobs:
    steps: int = 10  # Euler steps for the latent
    init_noise: float = 1.0  # z_1 ~ N(0, s^2 I)
    batch_size: int = 100

    def __post_init__(self) -> None:
        if self.steps < 1 or self.init_noise <= 0 or self.batch_size < 1:
            raise BadInput("bad LD4LG knob: need steps >= 1, init_noise > 0, batch_size >= 1")


class LD4LG(Method):
    Options = LD4LGOptions
    SampleKnobs = LD4LGSampleKnobs
    stages = ("autoencoder", "diffusion")

    def _vae(self, encoder, decoder) -> SentenceVAE:
        o = self.options
        trained = decoder_is_trained(o.vae_decoder, self.ctx.config.model.from_scratch)
        return SentenceVAE(encoder, decoder, self.ctx.tokenizer, o.latent_tokens, o.latent_dim, beta=o.beta,
                           latent_noise=o.latent_noise, token_replace_prob=o.token_replace_prob,
                           max_sentence_tokens=o.max_text_tokens, train_decoder=trained).to(self.ctx.device)

    def _denoiser(self, backbone) -> BlockDiffusionReasoner:
        o = self.options
        return BlockDiffusionReasoner(backbone, self.ctx.tokenizer, o.latent_tokens, o.latent_dim).to(self.ctx.device)

    @staticmethod
    def text_pairs(problems: list[Problem]) -> list[tuple[str, str]]:
        """(question, whole completion): what one latent encodes."""
        return [(p["prompt"], p["reference"]) for p in problems]

    # ------------------------------------------------------------------------------- training
    def train(self, stage: str | None = None) -> Path:
        self.check_stage(stage)
        final = self.train_autoencoder()
        if stage == "autoencoder":
            return final
        self.vae, self.stats = self._trained_vae()
        return self.train_diffusion()

    def train_autoencoder(self) -> Path:
        if done := finished_vae_phase(self, "autoencoder"):
            return done
        ctx, o = self.ctx, self.options
        backbone = ctx.backbone
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

    def oracle_batch(self, problems: list[Problem]) -> ReasoningBatch:
        """Each question with the normalised latent of its whole completion as its one and only block."""
        tok = self.ctx.tokenizer
        z0 = self.stats.normalize(encode_means(self.vae, self.text_pairs(problems)))
        questions = [[tok.bos_token_id, *tok.encode(p["prompt"], add_special_tokens=False)] for p in problems]
        return ReasoningBatch(questions, [[] for _ in problems], list(z0[:, None]))

    def train_diffusion(self) -> Path:
        """L_FM alone: no spec head (there is always one latent) and no answer loss into the latent."""
        if done := self.finished("diffusion"):
            return done
        ctx = self.ctx
        denoiser = self._denoiser(ctx.backbone.base_model())

        def loss_fn(step: int, shard: Shard):
            losses = teacher_forcing_losses(denoiser, self.oracle_batch(ctx.batch("diffusion", step, shard=shard)), answer=False)
            return losses["fm"], {}

        final = Trainer(ctx.phase("diffusion"), denoiser).fit(loss_fn)
        self.denoiser = denoiser.eval()
        return final

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
        tok = self.ctx.tokenizer
        questions = [[tok.bos_token_id, *tok.encode(p["prompt"], add_special_tokens=False)] for p in problems]

        def run_batch(rows: list[Trajectory]) -> list[str]:
            seq = start_sequence(self.denoiser, [questions[r.problem] for r in rows])
            active = torch.ones(len(rows), dtype=torch.bool, device=self.denoiser.device)
            z = denoise_block(seq, FlowMatchEuler(init_noise=settings.init_noise), settings.steps, active,
                              noise=RowNoise.of(rows, self.denoiser.device))
            return self.vae.decode(self.stats.denormalize(z))

        return self.sample_batched(problems, n, settings.batch_size, run_batch)
