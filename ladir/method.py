"""LaDiR under the shared protocol: the beta-VAE, then the reasoner's two training stages, then sampling.

Phases (each a `harness.training.Trainer` run, so checkpoints and exact resumption come for free):

    vae     beta-VAE on every reasoning sentence of the training problems (paper §3.1); afterwards
            the latent statistics and the held-out reconstruction exact-match go to vae/report.json
    stage1  teacher forcing on VAE-encoded oracle blocks: L = l_FM L_FM + l_Ans L_Ans + l_Spec L_Spec
    stage2  the reasoner rolls out its own blocks (`stage2_euler_steps` Euler steps from noise,
            gradients kept through the rollout) and the answer loss is taken on top of them; L_FM and
            L_Spec on the oracle batch are kept (paper §3.3)

Encoder, decoder and reasoner all start from the shared base checkpoint (`ctx.base_model()`), as
the paper initialises all three from the same LLM (the decoder stays frozen unless `vae_decoder` says
otherwise, see LaDiROptions). stage1 + stage2 share the run's fine-tuning
budget (`train.steps`); the VAE has its own (`vae_steps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import BadInput
from harness.methods import Method, register_method
from harness.training import Trainer, checkpoints, load_modules, phase_done
from ladir.pipeline import commit_block, decode_answer, denoise_block, generate_blocks, start_sequence
from ladir.reasoner import (BlockDiffusionReasoner, ReasoningBatch, answer_chunk_ids, answer_loss,
                            teacher_forcing_losses)
from ladir.sampler import FlowMatchEuler
from ladir.vae import (LatentStats, SentenceVAE, encode_means, latent_statistics, reconstruction_exact_match,
                       sentence_pairs, write_report)
from tasks import Problem


@dataclass
class LaDiROptions:
    # Blocks and the beta-VAE (§3.1). Paper: L_b 4-6, beta ~1e-5, k = 3, p = 0.3 at 8B scale. The
    # tiny defaults are tuned for held-out exact reconstruction >= 95% on Countdown-4 in 600 steps
    # (k = 0.5, p = 0.05: 97%; k = 1, p = 0.1: 90%; the tiny LM tolerates less corruption).
    latent_tokens: int = 4  # L_b latent tokens per sentence block
    latent_dim: int = 16  # d_z
    beta: float = 1e-5
    latent_noise: float = 0.5  # k: z' = z + N(0, k^2 I) during VAE training
    token_replace_prob: float = 0.05  # p: encoder input tokens replaced at random
    vae_steps: int = 600
    # "frozen" (the paper), "trainable", or "auto": frozen for a pretrained backbone, trained with the
    # encoder for a from-scratch tiny one, too weak a language model to be steered by L_b embeddings
    vae_decoder: str = "auto"
    vae_lr: float = 2e-3
    vae_batch_size: int = 0  # problems per VAE step (all their sentences); 0 = train.batch_size
    max_sentence_tokens: int = 64
    stats_problems: int = 2000  # training problems whose sentences give the latent mean/std
    report_problems: int = 200  # held-out (val) problems whose sentences measure reconstruction
    # The reasoner (§3.2-3.3)
    max_blocks: int = 8  # blocks per problem in training (later sentences dropped)
    lambda_fm: float = 1.0
    lambda_ans: float = 1.0
    lambda_spec: float = 1.0
    # Stage 2 (§3.3): rollout with gradients, paper 10 Euler steps instead of 50
    stage2_steps: int = 100  # taken from train.steps; stage1 gets the rest
    stage2_euler_steps: int = 10
    stage2_lr: float = 0.0  # 0 = train.lr

    def __post_init__(self) -> None:
        checks = [
            (self.vae_decoder in ("auto", "frozen", "trainable"), "vae_decoder must be auto, frozen or trainable"),
            (self.latent_tokens >= 1 and self.latent_dim >= 1, "latent_tokens and latent_dim must be >= 1"),
            (self.beta >= 0 and self.latent_noise >= 0, "beta and latent_noise must be >= 0"),
            (0 <= self.token_replace_prob < 1, "token_replace_prob must be in [0, 1)"),
            (self.stage2_steps >= 0 and self.stage2_euler_steps >= 1, "stage2_steps >= 0 and stage2_euler_steps >= 1"),
            (self.max_blocks >= 1, "max_blocks must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInput(f"bad method_options value: {message}")


@dataclass
class LaDiRSampleKnobs:
    steps: int = 10  # Euler steps per block
    init_noise: float = 1.0  # s: z_1 ~ N(0, s^2 I) (paper: 2 helps diversity and accuracy, > 3 hurts)
    gamma_max: float = 0.0  # diversity guidance strength (paper: 0.3-0.5 best, >= 1 hurts); 0 = off
    temperature: float = 1.0  # answer decoding; 0 = greedy
    max_blocks: int = 8
    max_answer_tokens: int = 64
    batch_size: int = 100  # trajectories per forward; guidance acts within one batch of one question
    cache: bool = True  # KV-cache the question and finished blocks (off: recompute, same result)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.init_noise <= 0 or self.gamma_max < 0 or self.temperature < 0 or self.batch_size < 1:
            raise BadInput("bad LaDiR knob: need steps >= 1, init_noise > 0, gamma_max >= 0, temperature >= 0, batch_size >= 1")


# ------------------------------------------------------------------------------------------ stage 2
def rollout_answer_loss(reasoner: BlockDiffusionReasoner, batch: ReasoningBatch, euler_steps: int) -> torch.Tensor:
    """Stage 2's L_Ans: the answer CE given blocks the model rolled out itself from noise (as many as the
    oracle has), with gradients kept through every Euler step into the velocity head and backbone."""
    sampler = FlowMatchEuler()
    seq = start_sequence(reasoner, batch.question_ids, cache=True)
    counts = batch.num_blocks.to(reasoner.device)
    for b in range(int(counts.max()) if len(batch) else 0):
        active = b < counts
        commit_block(seq, denoise_block(seq, sampler, euler_steps, active, b), active)
    ids, valid = answer_chunk_ids(reasoner, batch)
    return answer_loss(reasoner, seq.run(seq.token_chunk(ids, valid)), ids, valid)


# ------------------------------------------------------------------------------------------ the method
@register_method("ladir")
class LaDiR(Method):
    Options = LaDiROptions
    SampleKnobs = LaDiRSampleKnobs
    stages = ("vae", "stage1", "stage2")

    # ------------------------------------------------------------------------------- building blocks
    @property
    def train_decoder(self) -> bool:
        choice = self.options.vae_decoder
        return choice == "trainable" or (choice == "auto" and self.ctx.config.model.from_scratch)

    def _vae(self, encoder, decoder) -> SentenceVAE:
        o = self.options
        vae = SentenceVAE(encoder, decoder, self.ctx.tokenizer, o.latent_tokens, o.latent_dim, beta=o.beta,
                          latent_noise=o.latent_noise, token_replace_prob=o.token_replace_prob,
                          max_sentence_tokens=o.max_sentence_tokens, train_decoder=self.train_decoder)
        return vae.to(self.ctx.device)

    def _reasoner(self, backbone) -> BlockDiffusionReasoner:
        o = self.options
        return BlockDiffusionReasoner(backbone, self.ctx.tokenizer, o.latent_tokens, o.latent_dim).to(self.ctx.device)

    def _trained_vae(self) -> tuple[SentenceVAE, LatentStats]:
        """The finished VAE (frozen, eval) and its latent statistics."""
        # a trained decoder's weights are in the VAE checkpoint; a frozen one is the base
        decoder = self.ctx.fresh_backbone() if self.train_decoder else self.ctx.base_model()
        vae = self._vae(self.ctx.fresh_backbone(), decoder)
        load_modules(vae, self._final_checkpoint("vae"))
        vae.requires_grad_(False).eval()
        return vae, LatentStats.load(self.ctx.run_dir / "vae" / "latent_stats.safetensors")

    def _final_checkpoint(self, phase: str) -> Path:
        found = checkpoints(self.ctx.run_dir / phase)
        if not found:
            raise FileNotFoundError(f"no {phase} checkpoint in {self.ctx.run_dir}")
        return found[-1][1]

    def oracle_batch(self, problems: list[Problem]) -> ReasoningBatch:
        """Questions, answers and the oracle blocks: each reasoning sentence -> normalised VAE mean mu."""
        tok, task, o = self.ctx.tokenizer, self.ctx.task, self.options
        questions, answers, counts, pairs = [], [], [], []
        for problem in problems:
            sentences, answer = task.split_target(problem["reference"])
            sentences = sentences[: o.max_blocks]
            questions.append(self._question_ids(problem))
            answers.append([*tok.encode(answer, add_special_tokens=False), tok.eos_token_id])
            counts.append(len(sentences))
            pairs += [(problem["prompt"], s) for s in sentences]
        z0 = self.stats.normalize(encode_means(self.vae, pairs))  # (sum of counts, L_b, d_z)
        return ReasoningBatch(questions, answers, list(z0.split(counts)))

    # ------------------------------------------------------------------------------- training
    def train(self, stage: str | None = None) -> Path:
        if stage is not None and stage not in self.stages:
            raise BadInput(f"unknown stage {stage!r} (stages: {', '.join(self.stages)})")
        final = self.train_vae()
        if stage == "vae":
            return final
        self.vae, self.stats = self._trained_vae()
        final = self.train_stage1()
        if stage == "stage1":
            return final
        return self.train_stage2()

    def train_vae(self) -> Path:
        ctx, o = self.ctx, self.options
        vae = self._vae(ctx.base_model(), ctx.base_model())
        phase = ctx.phase("vae", steps=o.vae_steps, lr=o.vae_lr)
        size = o.vae_batch_size or None

        def loss_fn(step: int):
            return vae.loss(sentence_pairs(ctx.task, ctx.batch("vae", step, size), o.max_blocks))

        final = Trainer(phase, vae).fit(loss_fn)
        stats_path, report_path = phase.directory / "latent_stats.safetensors", phase.directory / "report.json"
        if not report_path.is_file():
            vae.eval()
            training_pairs = sentence_pairs(ctx.task, ctx.train_problems()[: o.stats_problems], o.max_blocks)
            stats = latent_statistics(vae, training_pairs)
            stats.save(stats_path)
            report = {"reconstruction": self.vae_report(vae), "latent_stats": stats.to_json()}
            write_report(report_path, report)
        return final

    def vae_report(self, vae: SentenceVAE) -> dict:
        """Reconstruction exact-match of held-out sentences (the val split, else test)."""
        task = self.ctx.task
        split = "val" if "val" in task.splits else "test"
        problems = [p for p in task.problems(split) if p.get("reference")][: self.options.report_problems]
        pairs = sentence_pairs(task, problems, self.options.max_blocks)
        return {"split": split, **reconstruction_exact_match(vae, pairs)}

    def _stage_steps(self) -> tuple[int, int]:
        total = self.ctx.config.train.steps
        stage2 = min(self.options.stage2_steps, total)
        return total - stage2, stage2

    def stage1_losses(self, reasoner: BlockDiffusionReasoner, batch: ReasoningBatch, answer: bool = True):
        """L = l_FM L_FM + l_Ans L_Ans + l_Spec L_Spec on the oracle blocks (teacher forcing)."""
        o = self.options
        losses = teacher_forcing_losses(reasoner, batch, answer=answer)
        total = o.lambda_fm * losses["fm"] + o.lambda_spec * losses["spec"]
        if answer:
            total = total + o.lambda_ans * losses["ans"]
        return total, {name: float(value.detach()) for name, value in losses.items()}

    def train_stage1(self) -> Path:
        """Stage 1: teacher forcing on oracle blocks (one forward: clean sequence + noisy copies of each block)."""
        ctx = self.ctx
        reasoner = self._reasoner(ctx.base_model())
        phase = ctx.phase("stage1", steps=self._stage_steps()[0])

        def loss_fn(step: int):
            return self.stage1_losses(reasoner, self.oracle_batch(ctx.batch("stage1", step)))

        final = Trainer(phase, reasoner).fit(loss_fn)
        self.reasoner = reasoner.eval()
        return final

    def train_stage2(self) -> Path:
        """Stage 2: from the stage-1 weights, L_Ans through the model's own rollout + L_FM, L_Spec on oracle blocks."""
        ctx, o = self.ctx, self.options
        reasoner = self._reasoner(ctx.fresh_backbone())
        load_modules(reasoner, self._final_checkpoint("stage1"))
        phase = ctx.phase("stage2", steps=self._stage_steps()[1], lr=o.stage2_lr or None)

        def loss_fn(step: int):
            batch = self.oracle_batch(ctx.batch("stage2", step))
            oracle, logs = self.stage1_losses(reasoner, batch, answer=False)  # L_FM, L_Spec kept
            rollout = rollout_answer_loss(reasoner, batch, o.stage2_euler_steps)
            return oracle + o.lambda_ans * rollout, {**logs, "ans_rollout": float(rollout.detach())}

        final = Trainer(phase, reasoner).fit(loss_fn)
        self.reasoner = reasoner.eval()
        return final

    # ------------------------------------------------------------------------------- sampling
    def load(self) -> None:
        self.vae, self.stats = self._trained_vae()
        reasoner = self._reasoner(self.ctx.fresh_backbone())
        last = "stage2" if phase_done(self.ctx.run_dir / "stage2") else "stage1"
        load_modules(reasoner, self._final_checkpoint(last))
        self.reasoner = reasoner.requires_grad_(False).eval()

    def _question_ids(self, problem: Problem) -> list[int]:
        tok = self.ctx.tokenizer
        return [tok.bos_token_id, *tok.encode(problem["prompt"], add_special_tokens=False)]

    def _generate(self, problem: Problem, n: int, knobs: LaDiRSampleKnobs, on_step=None):
        """n completions of one problem: denoised blocks decoded by the VAE, then the reasoner's answer.

        Returns (completions, block latents (n, N, L_b, d_z) normalised, presence (n, N)).
        """
        sampler = FlowMatchEuler(init_noise=knobs.init_noise, gamma_max=knobs.gamma_max)
        seq = start_sequence(self.reasoner, [self._question_ids(problem)] * n, cache=knobs.cache)
        z, present = generate_blocks(seq, sampler, knobs.steps, knobs.max_blocks, on_step)
        answers = decode_answer(seq, knobs.max_answer_tokens, knobs.temperature)
        texts = self.vae.decode(self.stats.denormalize(z.flatten(0, 1)))
        tok = self.ctx.tokenizer
        completions = []
        for i, answer in enumerate(answers):
            reasoning = [texts[i * z.size(1) + b] for b in range(z.size(1)) if present[i, b]]
            completions.append(" ".join([*reasoning, tok.decode(answer, skip_special_tokens=True).strip()]).strip())
        return completions, z, present

    @torch.no_grad()
    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        settings = self.sample_knobs(knobs)
        results = []
        for problem in problems:
            completions: list[str] = []
            while len(completions) < n:
                completions += self._generate(problem, min(settings.batch_size, n - len(completions)), settings)[0]
            results.append(completions)
        return results

    @torch.no_grad()
    def trace(self, problem: Problem, times=(1.0, 0.75, 0.5, 0.25, 0.0), steps: int = 20, seed: int = 0,
              **knobs) -> list[dict]:
        """Decode each block's predicted clean latent z0_hat = z_t - t * u(z_t, t) at the given times.

        One trajectory. A requested time uses the nearest point of the `steps` grid; at t = 0 the
        block's finished latent (the one decoded into the completion) is shown. Returns
        [{"block", "t", "text"}, ...] block by block, t descending, then the whole completion as
        {"block": None, "t": None, "text": ...}.
        """
        settings = self.sample_knobs({**knobs, "steps": steps})
        sampler = FlowMatchEuler()
        sampler.set_timesteps(steps)
        grid = [*sampler.timesteps, 0.0]
        wanted = {min(grid, key=lambda g: abs(g - t)) for t in times}
        records: list[tuple[int, float, torch.Tensor]] = []

        def on_step(block: int, t: float, z: torch.Tensor, u: torch.Tensor) -> None:
            if t in wanted:
                records.append((block, t, FlowMatchEuler.predicted_clean(u, t, z)[0]))

        with torch.random.fork_rng(devices=[self.ctx.device] if self.ctx.device.type == "cuda" else []):
            torch.manual_seed(seed)
            (completion,), z, _ = self._generate(problem, 1, settings, on_step)
        if 0.0 in wanted:
            records += [(b, 0.0, z[0, b]) for b in range(z.size(1))]
        records.sort(key=lambda r: (r[0], -r[1]))
        texts = self.vae.decode(self.stats.denormalize(torch.stack([r[2] for r in records]))) if records else []
        traced = [{"block": b, "t": t, "text": text} for (b, t, _), text in zip(records, texts, strict=True)]
        return traced + [{"block": None, "t": None, "text": completion}]
