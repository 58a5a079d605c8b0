"""LaDiR under the shared protocol: the beta-VAE, then the reasoner's two training stages, then sampling.

Phases (each a `harness.train.trainer.Trainer` run, so checkpoints and exact resumption come for free):

    vae     beta-VAE on every reasoning sentence of the training problems (paper §3.1); afterwards
            the latent statistics and the held-out reconstruction exact-match go to vae/report.json
    stage1  teacher forcing on VAE-encoded oracle blocks: L = l_FM L_FM + l_Ans L_Ans + l_Spec L_Spec
    stage2  the reasoner rolls out its own blocks (`stage2_euler_steps` Euler steps from noise,
            gradients kept through the rollout) and the answer loss is taken on top of them; L_FM and
            L_Spec on the oracle batch are kept (paper §3.3)

Encoder, decoder and reasoner all start from the shared base checkpoint (`ctx.backbone.base_model()`), as
the paper initialises all three from the same LLM (the decoder stays frozen unless `vae_decoder` says
otherwise, see LaDiROptions). stage1 + stage2 share the run's fine-tuning
budget (`train.steps`); the VAE has its own (`vae_steps`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness.backbone import shaping_train_fields
from harness.errors import BadInput
from harness.methods import Method
from harness.sampling import RowNoise, Trajectory
from harness.train import distributed
from harness.train.checkpoint import final_checkpoint, load_modules, phase_done
from harness.train.seeding import Shard, seed_initialisation
from harness.train.trainer import COSINE_FLOOR, Trainer
from ladir.pipeline import (
    commit_block,
    commit_blocks,
    decode_answer,
    denoise_block,
    generate_blocks,
    start_sequence,
)
from ladir.reasoner import (
    BlockDiffusionReasoner,
    ReasoningBatch,
    answer_chunk_ids,
    answer_loss,
    flow_matching_pair,
    stacked_blocks,
    teacher_forcing_losses,
)
from ladir.sampler import SOLVERS, FlowMatchEuler, FlowMatchSolver
from ladir.vae import (
    STATS_FILE,
    TABLE_MIN_EPOCHS,
    DecoderContext,
    LatentStats,
    SentenceVAE,
    decoder_is_trained,
    encode_means,
    finish_vae_phase,
    finished_vae_phase,
    looked_up,
    reasoning_context,
    sentence_context,
    sentence_pairs,
    tabulate_latents,
)
from tasks import Problem


@dataclass
class ImpliedAnswers:
    """Per rolled-out row, the answer ids its blocks imply (None: they imply none), and training logs
    about them (how often the rollouts imply an answer, and a right one)."""

    ids: list[list[int] | None]
    logs: dict[str, float]


# answers_for(rolled-out blocks (B, N, L_b, d_z), presence (B, N)) -> the answers they imply
AnswersFor = Callable[[torch.Tensor, torch.Tensor], ImpliedAnswers]


# Bump when the VAE's training changes in code, so that a shared VAE trained by older code is not reused.
VAE_RECIPE = 1
# LaDiR options that shape only the reasoner and its training stages, not the VAE: runs that differ
# only in these share one VAE (every other option, and any added later, keys it).
REASONER_OPTIONS = frozenset({
    "reasoner_init", "answer_sees_question", "cfg_drop", "lambda_fm", "lambda_ans", "lambda_spec", "fm_repeats",
    "oracle_latents", "stage2_steps", "stage2_euler_steps", "stage2_lr", "stage2_t0", "stage2_tf_answer",
    "stage2_answer",
})


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
    # 1,200 by measurement with decoder_context=reasoning (countdown4, tiny, results/ladir-countdown4,
    # g4-vae2x against g1-ctx): held-out exact 0.71 -> 0.77, valid steps from oracle latents 59.5% ->
    # 84.5%, sampled steps valid 3.3% -> 30.4%, diversity 5.51 -> 5.695, Pass@100 84.0 -> 85.0
    vae_steps: int = 1200
    # "frozen" (the paper), "trainable", or "auto": frozen for a pretrained backbone, trained with the
    # encoder for a from-scratch tiny one, too weak a language model to be steered by L_b embeddings
    vae_decoder: str = "auto"
    # What the VAE decoder reads before a block's latents: "none" (the paper: `<s>` alone, so a latent
    # must spell its whole sentence) or "reasoning" (the question and the sentences before it, so a
    # latent need only carry what that context leaves open; generated blocks are then decoded in order)
    # Measured (countdown4, tiny, results/ladir-countdown4): "reasoning" lifts LaDiR from Pass@1 1.0 /
    # Pass@100 44.5 / diversity 0.87 to 9.5 / 84.0 / 5.51, its own first blocks from 0% to 9% valid steps
    decoder_context: str = "reasoning"
    vae_lr: float = 2e-3
    vae_batch_size: int = 0  # problems per VAE step (all their sentences); 0 = train.batch_size
    max_sentence_tokens: int = 64
    stats_problems: int = 2000  # training problems whose sentences give the latent mean/std
    report_problems: int = 200  # held-out (val) problems whose sentences measure reconstruction
    # The reasoner (§3.2-3.3)
    max_blocks: int = 8  # blocks per problem in training (later sentences dropped)
    # "decoder": the reasoner starts from the weights the VAE decoder ended with and reads latents
    # through the VAE's latent-to-embedding map (latents made to be read, as in the paper where the
    # decoder, the base and the reasoner's start are one LLM); "base": the base LM, random latent map.
    # Measured (countdown4, probe): base -> the answer ignores its blocks; decoder -> it reads them
    reasoner_init: str = "decoder"
    answer_sees_question: bool = True  # False: the answer attends to the blocks, not the question
    cfg_drop: float = 0.0  # question dropped (only `<s>` kept) with this probability, for CFG sampling
    lambda_fm: float = 1.0
    lambda_ans: float = 1.0
    lambda_spec: float = 1.0
    fm_repeats: int = 1  # noisy copies per block per step (flow-matching samples per clean pass)
    oracle_latents: str = "mean"  # oracle blocks: the posterior "mean" mu, or a "sample" mu + sigma eps
    # Stage 2 (§3.3): rollout with gradients, paper 10 Euler steps instead of 50
    stage2_steps: int = 100  # taken from train.steps; stage1 gets the rest
    stage2_euler_steps: int = 10
    stage2_lr: float = 0.0  # 0 = constant at the rate stage 1 ended with (0.1 train.lr); else warm-up + cosine
    # Rollouts start from the oracle blocks noised to t0 (1 = pure noise, the paper): below 1 the
    # rolled-out blocks stay near the reference, so the reference answer the loss scores still follows
    # from them. Measured (countdown4, probe): the paper's stage 2 (t0 = 1, no teacher-forced answer)
    # teaches the answer to ignore blocks the tiny model cannot yet generate well; t0 = 0.5 with the
    # teacher-forced answer kept leaves it reading them. Paper setting: stage2_t0=1, stage2_tf_answer=0
    stage2_t0: float = 0.5
    stage2_tf_answer: float = 1.0  # weight of the teacher-forced answer loss kept in stage 2
    # The answer stage 2 scores after a rollout: the "reference" (the paper), or the one the rolled-out
    # blocks "imply" (decoded by the VAE; Countdown: the expression their steps build, right or wrong;
    # no answer loss where they imply none), so the answer is never taught to contradict its blocks
    stage2_answer: str = "reference"

    # Runs saved before an option existed were trained as this value says (harness.runs.read_saved_config)
    BEFORE_ADDED: ClassVar[dict[str, Any]] = {"decoder_context": "none"}

    def __post_init__(self) -> None:
        checks = [
            (self.vae_decoder in ("auto", "frozen", "trainable"), "vae_decoder must be auto, frozen or trainable"),
            (self.decoder_context in ("none", "reasoning"), "decoder_context must be none or reasoning"),
            (self.latent_tokens >= 1 and self.latent_dim >= 1, "latent_tokens and latent_dim must be >= 1"),
            (self.beta >= 0 and self.latent_noise >= 0, "beta and latent_noise must be >= 0"),
            (0 <= self.token_replace_prob < 1, "token_replace_prob must be in [0, 1)"),
            (self.stage2_steps >= 0 and self.stage2_euler_steps >= 1, "stage2_steps >= 0 and stage2_euler_steps >= 1"),
            (self.max_blocks >= 1, "max_blocks must be >= 1"),
            (self.reasoner_init in ("base", "decoder"), "reasoner_init must be base or decoder"),
            (self.oracle_latents in ("mean", "sample"), "oracle_latents must be mean or sample"),
            (0 <= self.cfg_drop < 1, "cfg_drop must be in [0, 1)"),
            (self.fm_repeats >= 1, "fm_repeats must be >= 1"),
            (0 < self.stage2_t0 <= 1, "stage2_t0 must be in (0, 1]"),
            (self.stage2_tf_answer >= 0, "stage2_tf_answer must be >= 0"),
            (self.stage2_answer in ("reference", "implied"), "stage2_answer must be reference or implied"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadInput(f"bad method_options value: {message}")


@dataclass
class LaDiRSampleKnobs:
    # velocity evaluations (NFE) per block, whatever the solver: euler and ab2 take `steps` steps,
    # heun and midpoint (two evaluations per step) steps / 2, so equal `steps` is equal cost
    steps: int = 10
    solver: str = "euler"  # euler (the paper), heun, midpoint, ab2 (ladir.sampler.SOLVERS)
    # s: z_1 ~ N(0, s^2 I) (paper: 2 helps diversity and accuracy, > 3 hurts); 0 starts every trajectory
    # at the noise's mode, so with temperature 0 a sample is deterministic (the greedy decode)
    init_noise: float = 1.0
    gamma_max: float = 0.0  # diversity guidance strength (paper: 0.3-0.5 best, >= 1 hurts); 0 = off
    # F summed over the other trajectories as the paper writes it (its gamma_max scale: the push grows
    # with k), instead of averaged over them (a gamma_max means the same push at every k)
    guidance_sum: bool = False
    temperature: float = 1.0  # answer decoding; 0 = greedy
    max_blocks: int = 8
    max_answer_tokens: int = 64
    batch_size: int = 100  # trajectories per forward, across problems (guidance on: whole problems per batch)
    cache: bool = True  # KV-cache the question and finished blocks (off: recompute, same result)
    cfg_scale: float = 1.0  # classifier-free guidance on the question (1 = off; needs cfg_drop > 0 in training)
    # each finished block decoded to its sentence and replaced by that sentence's VAE code (the posterior
    # mean, normalised) before the reasoner reads it: the latent stage 1 taught it to read
    reencode: bool = False
    # False: the blocks are not decoded to sentences and the completion is the answer alone. The
    # answer (so Pass@k) is the same; what is lost is the readable reasoning (and chain_valid), and
    # what is saved is the VAE decoder's passes: a context read per block and a pass per token
    write_reasoning: bool = True

    def __post_init__(self) -> None:
        if (self.steps < 1 or self.init_noise < 0 or self.gamma_max < 0 or self.temperature < 0 or self.batch_size < 1
                or self.cfg_scale < 0):
            raise BadInput("bad LaDiR knob: need steps >= 1, init_noise >= 0, gamma_max >= 0, temperature >= 0, "
                           "batch_size >= 1, cfg_scale >= 0")
        if self.solver not in SOLVERS:
            raise BadInput(f"bad LaDiR knob: solver {self.solver!r} is not one of {', '.join(SOLVERS)}")
        try:
            SOLVERS[self.solver].check_evaluations(self.steps)
        except ValueError as error:
            raise BadInput(f"bad LaDiR knob steps={self.steps}: {error}") from None

    def sampler(self) -> FlowMatchSolver:
        """The knobs' solver, with their initial noise and diversity guidance."""
        return SOLVERS[self.solver](init_noise=self.init_noise, gamma_max=self.gamma_max,
                                    guidance_sum=self.guidance_sum)


# ------------------------------------------------------------------------------------------ stage 2
def rollout_answer_loss(reasoner: BlockDiffusionReasoner, batch: ReasoningBatch, euler_steps: int,
                        t0: float = 1.0, answers_for: AnswersFor | None = None
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 2's L_Ans: the answer CE given blocks the model rolled out itself (as many as the oracle
    has), with gradients kept through every Euler step into the velocity head and backbone.

    Each rollout starts from noise (t0 = 1, the paper) or from its oracle block noised to t0 < 1,
    z_t0 = (1 - t0) z_0 + t0 eps, so that the blocks stay close enough to the reference for the
    reference answer to follow from them. `answers_for(blocks, present)` replaces each row's target
    by the answer its rolled-out blocks imply (None: no answer loss for that row); its logs are returned
    with the loss.
    """
    sampler = FlowMatchEuler()
    # transformers drops the KV cache inside checkpointed layers in training mode, so with gradient
    # checkpointing on, the rollout re-reads its prefix at every pass instead of caching it
    seq = start_sequence(reasoner, batch.question_ids, cache=not reasoner.backbone.is_gradient_checkpointing)
    counts = batch.num_blocks.to(reasoner.device)
    oracle, present = stacked_blocks(batch.blocks, (reasoner.latent_tokens, reasoner.latent_dim), reasoner.device)
    rolled, logs = [], {}
    for b in range(int(counts.max()) if len(batch) else 0):
        active = b < counts
        start = None
        if t0 < 1.0:
            start, _ = flow_matching_pair(oracle[:, b], torch.full((len(batch),), t0, device=reasoner.device),
                                          torch.randn_like(oracle[:, b]))
        z = denoise_block(seq, sampler, euler_steps, active, b, z=start, t_start=t0)
        commit_block(seq, z, active)
        rolled.append(z)
    if answers_for is not None and rolled:
        # a row whose blocks imply no answer gets no answer loss: no target may contradict its blocks
        implied = answers_for(torch.stack(rolled, 1).detach(), present)
        batch = ReasoningBatch(batch.question_ids, [ids or [] for ids in implied.ids], batch.blocks)
        logs = implied.logs
    ids, valid = answer_chunk_ids(reasoner, batch)
    hidden = seq.run(seq.token_chunk(ids, valid))
    if not bool(valid[:, 1:].any()):
        return hidden.sum() * 0.0, logs
    return answer_loss(reasoner, hidden, ids, valid), logs


@dataclass
class Generation:
    """What one batch of trajectories made: the completions, and what they were made of."""

    completions: list[str]
    latents: torch.Tensor  # (B, N, L_b, d_z), normalised
    reasoning: list[list[str]]  # each row's blocks decoded to sentences


class SentenceReencoder:
    """The `reencode` knob: `project`, a projection for `generate_blocks`, decodes each finished block
    to its sentence (after the sentences before it, for a context-reading decoder) and replaces the
    block by the VAE's normalised posterior mean of that sentence; the sentences it decoded are kept
    in `sentences` (the completion's reasoning, so it is not decoded twice).

    Stage 1 teaches the reasoner to read codes of real sentences; a flow sample near a code decodes
    to the same sentence but is read as something else (probe: an answer that does not follow the
    steps its blocks decode to). Projecting onto the code removes that gap at sampling time."""

    def __init__(self, method: LaDiR, problems: list[Problem]):
        self.method, self.problems = method, problems
        self.sentences: list[list[str]] = [[] for _ in problems]
        self.decoder = method.reasoning_decoder(problems)

    def project(self, block: int, z: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        method = self.method
        rows = active.nonzero().squeeze(1).tolist()
        # the sentence's encoding context, as for the oracle codes (a question-only decoder ignores it)
        contexts = [sentence_context(self.problems[i]["prompt"], self.sentences[i], method.decoder_reads_context)
                    for i in rows]
        texts = self.decoder.decode(method.stats.denormalize(z[rows]), rows)
        for i, text in zip(rows, texts, strict=True):
            self.sentences[i].append(text)
        projected = z.clone()
        projected[rows] = method.stats.normalize(encode_means(method.vae, list(zip(contexts, texts, strict=True))))
        return projected


# ------------------------------------------------------------------------------------------ the method
class LaDiR(Method):
    Options = LaDiROptions
    SampleKnobs = LaDiRSampleKnobs
    stages = ("vae", "stage1", "stage2")
    oracle_table: dict[str, torch.Tensor] | None = None  # task_id -> its oracle blocks, while training
    TABLE_MIN_EPOCHS: ClassVar[float] = TABLE_MIN_EPOCHS  # ladir.vae's, per class so a run or test can change it

    # ------------------------------------------------------------------------------- building blocks
    @property
    def train_decoder(self) -> bool:
        return decoder_is_trained(self.options.vae_decoder, self.ctx.config.model.from_scratch)

    def _vae(self, encoder, decoder) -> SentenceVAE:
        o = self.options
        vae = SentenceVAE(encoder, decoder, self.ctx.tokenizer, o.latent_tokens, o.latent_dim, beta=o.beta,
                          latent_noise=o.latent_noise, token_replace_prob=o.token_replace_prob,
                          max_sentence_tokens=o.max_sentence_tokens, train_decoder=self.train_decoder,
                          decoder_context=self.decoder_reads_context)
        return vae.to(self.ctx.device)

    @property
    def decoder_reads_context(self) -> bool:
        """`decoder_context: reasoning`: the VAE decoder reads the question and earlier sentences."""
        return self.options.decoder_context == "reasoning"

    def sentence_pairs(self, problems: list[Problem]) -> list:
        """The (context, sentence) pairs the VAE encodes for these problems' reference reasoning."""
        return sentence_pairs(self.ctx.task, problems, self.options.max_blocks, self.decoder_reads_context)

    def _reasoner(self, backbone) -> BlockDiffusionReasoner:
        o = self.options
        return BlockDiffusionReasoner(backbone, self.ctx.tokenizer, o.latent_tokens, o.latent_dim,
                                      answer_sees_question=o.answer_sees_question).to(self.ctx.device)

    def _initial_reasoner(self) -> BlockDiffusionReasoner:
        """Stage 1's starting point: the base LM, or the finished VAE decoder reading latents its own way."""
        if self.options.reasoner_init == "base":
            return self._reasoner(self.ctx.backbone.base_model())
        reasoner = self._reasoner(copy.deepcopy(self.vae.decoder).requires_grad_(True).train())
        reasoner.read_latents_like(self.vae.to_prefix, self.stats.mean, self.stats.std)
        return reasoner

    def _trained_vae(self) -> tuple[SentenceVAE, LatentStats]:
        """The finished VAE (frozen, eval) and its latent statistics."""
        # a trained decoder's weights are in the VAE checkpoint; a frozen one is the base
        decoder = self.ctx.backbone.fresh_model() if self.train_decoder else self.ctx.backbone.base_model()
        vae = self._vae(self.ctx.backbone.fresh_model(), decoder)
        load_modules(vae, final_checkpoint(self.ctx.run_dir / "vae")[1])
        vae.requires_grad_(False).eval()
        return vae, LatentStats.load(self.ctx.run_dir / "vae" / STATS_FILE)

    def oracle_blocks(self, problems: list[Problem]) -> list[torch.Tensor]:
        """Each problem's oracle blocks (its sentences, L_b, d_z): each reasoning sentence -> normalised
        VAE mean mu (or a draw from the posterior, `oracle_latents: sample`)."""
        if (tabled := looked_up(self.oracle_table, problems)) is not None:
            return tabled
        pairs = [self.sentence_pairs([problem]) for problem in problems]
        sample = self.options.oracle_latents == "sample"
        z0 = self.stats.normalize(encode_means(self.vae, [pair for each in pairs for pair in each], sample=sample))
        return list(z0.split([len(each) for each in pairs]))

    def tabulate_oracle_blocks(self) -> dict[str, torch.Tensor] | None:
        """The frozen VAE's mu is a function of the problem, so a run that draws its training problems
        twice or more (stages 1 and 2 together) encodes each once, before stage 1, in a fixed order
        (the same table after a resume: the runs stay bitwise resumable). It saves the VAE encoder's
        forward pass, about a quarter of a stage-1 step at the reference scale."""
        if self.options.oracle_latents == "sample":  # a fresh draw each time, not a function of the problem
            return None
        return tabulate_latents(self.ctx.train_problems(), self.oracle_blocks, self.ctx.config.train,
                                self.TABLE_MIN_EPOCHS)

    def oracle_batch(self, problems: list[Problem]) -> ReasoningBatch:
        """Questions, answers and the oracle blocks."""
        tok, task = self.ctx.tokenizer, self.ctx.task
        answers = [[*tok.encode(task.split_target(p["reference"])[1], add_special_tokens=False), tok.eos_token_id]
                   for p in problems]
        return ReasoningBatch([self._question_ids(p) for p in problems], answers, self.oracle_blocks(problems))

    def drop_questions(self, batch: ReasoningBatch) -> ReasoningBatch:
        """For classifier-free guidance: each question replaced by `<s>` alone with probability cfg_drop."""
        if self.options.cfg_drop == 0:
            return batch
        dropped = (torch.rand(len(batch)) < self.options.cfg_drop).tolist()
        bos = self.ctx.tokenizer.bos_token_id
        questions = [[bos] if drop else q for q, drop in zip(batch.question_ids, dropped, strict=True)]
        return ReasoningBatch(questions, batch.answer_ids, batch.blocks)

    # ------------------------------------------------------------------------------- training
    def train(self, stage: str | None = None) -> Path:
        self.check_stage(stage)
        final = self.train_vae()
        if stage == "vae":
            return final
        self.vae, self.stats = self._trained_vae()
        if not self.finished("stage1") or (stage != "stage1" and not self.finished("stage2")):
            self.oracle_table = self.tabulate_oracle_blocks()
        try:
            final = self.train_stage1()
            return final if stage == "stage1" else self.train_stage2()
        finally:
            self.oracle_table = None  # the training problems' blocks under this VAE: not for later callers

    def shared_vae_directory(self) -> Path:
        """Where the runs whose VAE is the same keep one finished copy (`finished_vae_phase`): keyed by
        the base, the task and seed, the training settings that shape a phase, and every LaDiR option
        but the reasoner's, so a stage-2 or sampling ablation trains one VAE and a VAE ablation its own."""
        ctx = self.ctx
        options = {name: value for name, value in vars(self.options).items() if name not in REASONER_OPTIONS}
        # the VAE draws noise per micro-batch (seeded by its index among processes x accumulation steps)
        # on the run's device, so those shape it too
        micro_batches = distributed.world_size() * ctx.config.train.grad_accum_steps
        key = json.dumps({"base": ctx.backbone.directory.name, "task": ctx.config.task,
                          "task_options": ctx.config.task_options, "model": vars(ctx.config.model),
                          "seed": ctx.seed, "train": shaping_train_fields(ctx.config.train),
                          "micro_batches": micro_batches, "device": ctx.device.type,
                          "options": options, "recipe": VAE_RECIPE}, sort_keys=True, default=str)
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        return ctx.runs_root / "_vae" / f"ladir-{ctx.config.task}-seed{ctx.seed}-{digest}"

    def shared_phases(self) -> dict[str, tuple[Path, int]]:
        return {"vae": (self.shared_vae_directory(), self.options.vae_steps)}

    def train_vae(self) -> Path:
        if done := finished_vae_phase(self, "vae", self.shared_vae_directory(), VAE_RECIPE):
            return done
        ctx, o = self.ctx, self.options
        seed_initialisation(ctx.seed, "vae")
        vae = self._vae(ctx.backbone.base_model(), ctx.backbone.base_model())
        phase = ctx.phase("vae", steps=o.vae_steps, lr=o.vae_lr)
        size = o.vae_batch_size or None

        def loss_fn(step: int, shard: Shard):
            return vae.loss(self.sentence_pairs(ctx.batch("vae", step, size, shard)))

        Trainer(phase, vae).fit(loss_fn)
        finish_vae_phase(vae, phase.directory,
                         self.sentence_pairs(ctx.train_problems()[: o.stats_problems]),
                         self.held_out_pairs(), VAE_RECIPE)
        return finished_vae_phase(self, "vae", self.shared_vae_directory(), VAE_RECIPE)  # and published

    def held_out_pairs(self) -> dict:
        """The VAE report's sentences: those of held-out problems (the val split, else test)."""
        task = self.ctx.task
        split = "val" if "val" in task.splits else "test"
        problems = [p for p in task.problems(split) if p.get("reference")][: self.options.report_problems]
        return {"split": split, "pairs": self.sentence_pairs(problems)}

    def _stage_steps(self) -> tuple[int, int]:
        total = self.ctx.config.train.steps
        stage2 = min(self.options.stage2_steps, total)
        return total - stage2, stage2

    def stage1_losses(self, reasoner: BlockDiffusionReasoner, batch: ReasoningBatch, answer_weight: float = 1.0):
        """L = l_FM L_FM + l_Spec L_Spec + answer_weight l_Ans L_Ans on the oracle blocks (teacher forcing)."""
        o = self.options
        losses = teacher_forcing_losses(reasoner, batch, answer=answer_weight > 0, fm_repeats=o.fm_repeats)
        total = o.lambda_fm * losses["fm"] + o.lambda_spec * losses["spec"]
        if answer_weight > 0:
            total = total + answer_weight * o.lambda_ans * losses["ans"]
        return total, {name: float(value.detach()) for name, value in losses.items()}

    def train_stage1(self) -> Path:
        """Stage 1: teacher forcing on oracle blocks (one forward: clean sequence + noisy copies of each block)."""
        if done := self.finished("stage1"):
            return done
        ctx = self.ctx
        seed_initialisation(ctx.seed, "stage1")
        reasoner = self._initial_reasoner()
        phase = ctx.phase("stage1", steps=self._stage_steps()[0])

        def loss_fn(step: int, shard: Shard):
            return self.stage1_losses(reasoner, self.drop_questions(self.oracle_batch(ctx.batch("stage1", step, shard=shard))))

        final = Trainer(phase, reasoner).fit(loss_fn)
        self.reasoner = reasoner.eval()
        return final

    def train_stage2(self) -> Path:
        """Stage 2: from the stage-1 weights, L_Ans through the model's own rollout + L_FM, L_Spec on oracle blocks.

        Its learning rate stays where stage 1's schedule ended (the cosine floor, 0.1 lr, constant, no
        new warm-up) unless `stage2_lr` sets one (then warm-up and cosine as any phase).
        """
        ctx, o = self.ctx, self.options
        reasoner = self._reasoner(ctx.backbone.fresh_model())
        load_modules(reasoner, final_checkpoint(self.ctx.run_dir / "stage1")[1])
        phase = ctx.phase("stage2", steps=self._stage_steps()[1],
                          lr=o.stage2_lr or COSINE_FLOOR * ctx.config.train.lr,
                          schedule="cosine" if o.stage2_lr else "constant")

        def loss_fn(step: int, shard: Shard):
            problems = ctx.batch("stage2", step, shard=shard)
            batch = self.drop_questions(self.oracle_batch(problems))
            oracle, logs = self.stage1_losses(reasoner, batch, answer_weight=o.stage2_tf_answer)  # L_FM, L_Spec kept
            def implied(z: torch.Tensor, present: torch.Tensor) -> ImpliedAnswers:
                return self.implied_answers(problems, z, present)

            rollout, rollout_logs = rollout_answer_loss(reasoner, batch, o.stage2_euler_steps, o.stage2_t0,
                                                        implied if o.stage2_answer == "implied" else None)
            return oracle + o.lambda_ans * rollout, {**logs, **rollout_logs, "ans_rollout": float(rollout.detach())}

        final = Trainer(phase, reasoner).fit(loss_fn)
        self.reasoner = reasoner.eval()
        return final

    def implied_answers(self, problems: list[Problem], z: torch.Tensor, present: torch.Tensor) -> ImpliedAnswers:
        """Per row, the answer its blocks imply (decoded by the VAE, `Task.answer_from_steps`), as ids."""
        tok, task = self.ctx.tokenizer, self.ctx.task
        answers, correct = [], 0
        for problem, steps in zip(problems, self.decode_reasoning(problems, z, present), strict=True):
            answer = task.answer_from_steps(problem, steps)
            answers.append(None if answer is None else [*tok.encode(answer, add_special_tokens=False), tok.eos_token_id])
            correct += answer is not None and task.check(problem, answer).passed
        rows = max(1, len(answers))
        return ImpliedAnswers(answers, {"rollout_implied": sum(a is not None for a in answers) / rows,
                                        "rollout_correct": correct / rows})

    # ------------------------------------------------------------------------------- sampling
    def load(self, phase: str | None = None) -> None:
        """The VAE and the reasoner of `phase` (stage1 or stage2; default: the last one finished)."""
        self.vae, self.stats = self._trained_vae()
        self.load_reasoner(phase)

    def load_untrained(self) -> None:
        fresh = self.ctx.backbone.fresh_model
        self.vae = self._vae(fresh(), fresh()).requires_grad_(False).eval()
        self.stats = LatentStats.identity(self.options.latent_tokens, self.options.latent_dim)
        self.reasoner = self._reasoner(fresh()).requires_grad_(False).eval()

    def load_reasoner(self, phase: str | None = None) -> None:
        if phase not in (None, "stage1", "stage2"):
            raise BadInput(f"LaDiR has no reasoner checkpoint {phase!r} (stage1 or stage2)")
        reasoner = self._reasoner(self.ctx.backbone.fresh_model())
        last = phase or ("stage2" if phase_done(self.ctx.run_dir / "stage2") else "stage1")
        step, path = final_checkpoint(self.ctx.run_dir / last)
        load_modules(reasoner, path)
        self.reasoner = reasoner.requires_grad_(False).eval()
        self.checkpoint = {"phase": last, "step": step, "path": str(path)}

    def _question_ids(self, problem: Problem) -> list[int]:
        tok = self.ctx.tokenizer
        return [tok.bos_token_id, *tok.encode(problem["prompt"], add_special_tokens=False)]

    def _generate(self, problems: list[Problem], noise: RowNoise, groups: torch.Tensor | None,
                  knobs: LaDiRSampleKnobs, on_step=None):
        """A completion per row (row i answers `problems[i]`, drawing with `noise`'s stream i): denoised
        blocks, decoded by the VAE (`decode_reasoning`), then the reasoner's answer (KV-cached).
        Guidance acts within `groups` (B,): one question's trajectories.

        Returns the completions with the block latents and decoded sentences they were made of.
        """
        sampler = knobs.sampler()
        seq = start_sequence(self.reasoner, [self._question_ids(p) for p in problems], cache=knobs.cache)
        reencoder = SentenceReencoder(self, problems) if knobs.reencode else None
        z, present = generate_blocks(seq, sampler, knobs.steps, knobs.max_blocks, on_step, knobs.cfg_scale,
                                     noise=noise.stream("blocks"), groups=groups,
                                     project=reencoder.project if reencoder else None)
        answers = decode_answer(seq, knobs.max_answer_tokens, knobs.temperature, noise.stream("answer"))
        tok = self.ctx.tokenizer
        # re-encoding already decoded every block; otherwise decode them now (unless not wanted)
        if reencoder:
            reasoning = reencoder.sentences
        elif knobs.write_reasoning:
            reasoning = self.decode_reasoning(problems, z, present)
        else:
            reasoning = [[] for _ in problems]
        completions = [" ".join([*sentences, tok.decode(answer, skip_special_tokens=True).strip()]).strip()
                       for sentences, answer in zip(reasoning, answers, strict=True)]
        return Generation(completions, z, reasoning)

    # ------------------------------------------------------------------------------- probing (ladir.probe)
    @torch.no_grad()
    def answers_given_blocks(self, problems: list[Problem], blocks: list[torch.Tensor],
                             max_answer_tokens: int = 64) -> list[str]:
        """The greedy answer text after each problem's question and the given (normalised) blocks."""
        seq = start_sequence(self.reasoner, [self._question_ids(p) for p in problems])
        commit_blocks(seq, blocks)
        tok = self.ctx.tokenizer
        return [tok.decode(a, skip_special_tokens=True).strip() for a in decode_answer(seq, max_answer_tokens, 0.0)]

    @torch.no_grad()
    def sample_blocks(self, problems: list[Problem], **knobs) -> tuple[torch.Tensor, torch.Tensor]:
        """One trajectory of blocks per problem (no guidance across problems): (B, N, L_b, d_z), (B, N)."""
        settings = self.sample_knobs({**knobs, "gamma_max": 0.0})
        sampler = settings.sampler()  # gamma_max 0: no guidance across problems
        seq = start_sequence(self.reasoner, [self._question_ids(p) for p in problems], cache=settings.cache)
        project = SentenceReencoder(self, problems).project if settings.reencode else None
        return generate_blocks(seq, sampler, settings.steps, settings.max_blocks, cfg_scale=settings.cfg_scale,
                               project=project)

    def decode_blocks(self, z: torch.Tensor, contexts: list[str] | None = None) -> list[str]:
        """VAE-decoded text of normalised block latents (N, L_b, d_z) (`contexts`: each one's context
        text, for a context-conditioned decoder)."""
        return self.vae.decode(self.stats.denormalize(z), contexts) if len(z) else []

    def reasoning_decoder(self, problems: list[Problem]) -> DecoderContext:
        """The VAE decoder's context for the problems' trajectories: each question read once, then
        each block decoded in order after the sentences before it (`DecoderContext.decode`)."""
        questions = [p["prompt"] for p in problems] if self.decoder_reads_context else None
        return self.vae.read_contexts(questions, len(problems))

    def decode_reasoning(self, problems: list[Problem], z: torch.Tensor, present: torch.Tensor) -> list[list[str]]:
        """Each row's blocks (B, N, L_b, d_z) where `present` (B, N), decoded to its reasoning sentences:
        all in one batched call, or block by block when the decoder reads the sentences before."""
        if not self.decoder_reads_context:
            texts = iter(self.decode_blocks(z[present]))  # row-major: row i's blocks in order
            return [[next(texts) for kept in row if kept] for row in present.tolist()]
        reasoning: list[list[str]] = [[] for _ in problems]
        decoder = self.reasoning_decoder(problems)
        for b in range(z.size(1)):
            rows = present[:, b].nonzero().squeeze(1).tolist()
            decoder.keep(rows)  # a row that stops reasoning never resumes
            if rows:
                for i, text in zip(rows, decoder.decode(self.stats.denormalize(z[rows, b]), rows), strict=True):
                    reasoning[i].append(text)
        return reasoning

    @torch.no_grad()
    def sample(self, problems: list[Problem], n: int, **knobs) -> list[list[str]]:
        """Batches of `batch_size` trajectories across problems; with diversity guidance on, a problem's
        n trajectories always share one batch (the guidance acts among them), so such a batch holds
        whole problems and at least one."""
        settings = self.sample_knobs(knobs)

        def run_batch(rows: list[Trajectory]) -> list[str]:
            groups = torch.tensor([r.problem for r in rows], device=self.ctx.device)
            return self._generate([problems[r.problem] for r in rows], RowNoise.of(rows, self.ctx.device), groups,
                                  settings).completions

        return self.sample_batched(problems, n, settings.batch_size, run_batch, whole_problems=settings.gamma_max > 0)

    @torch.no_grad()
    def trace(self, problem: Problem, times=(1.0, 0.75, 0.5, 0.25, 0.0), steps: int = 20, seed: int = 0,
              **knobs) -> list[dict]:
        """Decode each block's predicted clean latent z0_hat = z_t - t * u(z_t, t) at the given times.

        One trajectory. A requested time uses the nearest time at which the solver (`solver` knob)
        evaluates the velocity in `steps` evaluations; at t = 0 the block's finished latent (the one
        decoded into the completion) is shown. Returns
        [{"block", "t", "text"}, ...] block by block, t descending, then the whole completion as
        {"block": None, "t": None, "text": ...}.
        """
        settings = self.sample_knobs({**knobs, "steps": steps, "write_reasoning": True})
        sampler = settings.sampler()
        sampler.set_timesteps(steps)
        grid = [*sampler.timesteps, 0.0]
        wanted = {min(grid, key=lambda g: abs(g - t)) for t in times}
        # (block, t) -> z0_hat; where a solver evaluates twice at one t (Heun: its predictor, then the
        # next step's start), the later evaluation, on the corrected sample, is kept
        estimates: dict[tuple[int, float], torch.Tensor] = {}

        def on_step(block: int, t: float, z: torch.Tensor, u: torch.Tensor) -> None:
            if t in wanted:
                estimates[block, t] = FlowMatchSolver.predicted_clean(u, t, z)[0]

        generation = self._generate([problem], RowNoise([seed], self.ctx.device), None, settings, on_step)
        (completion,), z, (finished,) = generation.completions, generation.latents, generation.reasoning
        if 0.0 in wanted:
            estimates.update({(b, 0.0): z[0, b] for b in range(z.size(1))})
        records = sorted(((b, t, estimate) for (b, t), estimate in estimates.items()), key=lambda r: (r[0], -r[1]))
        # a block's estimates are decoded after the finished sentences before it, as its final text was
        contexts = [reasoning_context(problem["prompt"], finished[:b]) for b, _, _ in records]
        texts = self.decode_blocks(torch.stack([r[2] for r in records]), contexts) if records else []
        traced = [{"block": b, "t": t, "text": text} for (b, t, _), text in zip(records, texts, strict=True)]
        return traced + [{"block": None, "t": None, "text": completion}]
