"""`ladir-bench bench`: where a harness spends its compute, measured side by side on one machine.

Every figure is the median of `repeats` timed runs after one untimed warm-up, on the real code paths
(`Method.sample`, the methods' own training losses, `Task.check_many`):

  sample_ratio_ladir_ar   LaDiR's time for k = 100 samples per problem (10 Euler steps) / AR-SFT's,
                          same backbone, Countdown-4, batched (<= 1.0: LaDiR at AR cost)
  sample_ratio_ladir_ar_fast  the same at FAST_SETTING, the cheapest solver setting whose Pass@1
                          matched Euler-10's on a trained run (results/bench/solvers-countdown3.md)
  sample_ratio_ladir_ar_answer_only  the same, the blocks not decoded to text (`write_reasoning`
                          false: the answer, so Pass@k, unchanged; the VAE decoder's passes saved)
  cache_ratio             a KV-cached denoising step / an uncached one, 8 finished blocks of prefix
  train_ratio_ladir_ar    LaDiR stage-1 training sequences/s / AR-SFT's, same backbone and batch
  mfu                     AR-SFT training FLOP/s / this machine's measured fp32 matmul peak
  batching_speedup        evaluation samples/s filling batches across problems / one problem per
                          batch, k = 10
  *_checker_per_s         the three exact checkers (harness.tools.bench_checkers)

The models are freshly initialised (`Method.load_untrained`): timing does not depend on what the
weights learned, only on how much they write, and an untrained model writes a length set by chance.
So the work is pinned to what trained models write on Countdown-4, measured from the training
references: AR writes the references' median token count, LaDiR the median number of reasoning
sentences as blocks, each decoded by the VAE to the median sentence length, then the median answer.

Beside the figures, `details.sampling` holds LaDiR / AR at equal velocity evaluations per block for
every solver (`solvers`) and what one LaDiR sample's time is made of (`breakdown`: question prefill,
velocity evaluations, solver arithmetic, block commits, VAE decoding, answer), each ratio timed in
back-to-back pairs so that the machine's load drifts between pairs, not within one.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

import torch

from harness.config import load_config, parse_override
from harness.context import RunContext, resolve_device
from harness.lm import lm_loss, sample_completions
from harness.methods import Method, get_method_class
from harness.progress import console
from harness.sampling import RowNoise
from ladir.sampler import SOLVERS

# (key, what it measures, target, "max" if the figure must stay at or below the target else "min")
FIGURES: list[tuple[str, str, float, str]] = [
    ("sample_ratio_ladir_ar", "LaDiR / AR-SFT time, k=100 samples per problem, 10 Euler steps", 1.0, "max"),
    ("sample_ratio_ladir_ar_fast", "the same at FAST_SETTING (Pass@1 matching Euler-10's)", 1.0, "max"),
    ("sample_ratio_ladir_ar_answer_only", "the same, blocks not decoded to text (write_reasoning=false)", 1.0,
     "max"),
    ("sample_ratio_mdm_ar", "MDM / AR-SFT time, k=100, the default decoder (3 tokens a step, no cache)", 2.0,
     "max"),
    ("sample_ratio_mdm_ar_fast", "the same at MDM_FAST_SETTING (blocks of 8, dual cache, threshold 0.9)", 2.0, "max"),
    ("cache_ratio", "cached / uncached denoising step, 8 finished blocks", 0.3, "max"),
    ("train_ratio_ladir_ar", "LaDiR stage-1 / AR-SFT training sequences/s", 0.7, "min"),
    ("mfu", "AR-SFT training FLOP/s / measured fp32 matmul peak", 0.3, "min"),
    ("batching_speedup", "eval samples/s across problems / one problem per batch, k=10", 3.0, "min"),
    ("countdown_checker_per_s", "Countdown checker samples/s", 50_000, "min"),
    ("math_checker_per_s", "math checker samples/s (math-verify, timeouts, all cores)", 2_000, "min"),
    ("code_checker_per_s", "code sandbox samples/s (HumanEval canonical, all cores)", 20, "min"),
]
KEYS = [key for key, *_ in FIGURES]

PAPER_SETTING = {"solver": "euler", "steps": 10}
# The cheapest setting whose Pass@1 was no lower than PAPER_SETTING's on a trained countdown3 run,
# every solver at 1-20 velocity evaluations per block (results/bench/solvers-countdown3.md): Pass@1
# is flat in the solver and the NFE there, so the fewest evaluations win. On the Countdown-4
# reference run it is higher at 2 evaluations than at 10, 14.3 against 11.6
# (results/countdown-reference/README.md, decoding/)
FAST_SETTING = {"solver": "euler", "steps": 2}
SOLVER_NFE = (2, 4, 10)  # velocity evaluations per block at which every solver is timed against AR
# MDM's fastest decoding (Fast-dLLM): semi-autoregressive blocks of 8, the dual KV cache refreshed
# for the last block only, and every masked token above 0.9 confidence committed at once. Its
# samples/s target, half AR's, is a time ratio of at most 2.
MDM_FAST_SETTING = {"block_length": 8, "cache": "dual", "refresh": "last_block", "threshold": 0.9}
MDM_TOKENS_PER_STEP = 3  # the default decoder's rate: 32 steps over a 96-token target


def median_seconds(fn: Callable[[], Any], repeats: int, device: torch.device, warm_up: bool = True) -> float:
    """Median wall time of `fn` over `repeats` runs (at least one), after one warm-up run that is not
    counted (unless `warm_up` is False)."""
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if warm_up:
        once()
    return statistics.median(once() for _ in range(max(1, repeats)))


@dataclass
class Workload:
    """What a trained model writes per sample on the task, in tokens and blocks (medians over references)."""

    completion_tokens: int
    sentences: int
    sentence_tokens: int
    answer_tokens: int


def reference_workload(ctx: RunContext, count: int = 500) -> Workload:
    tok, task = ctx.tokenizer, ctx.task
    completions, sentences, sentence_tokens, answers = [], [], [], []
    for problem in ctx.train_problems()[:count]:
        completions.append(len(tok.encode(problem["reference"], add_special_tokens=False)) + 1)
        steps, answer = task.split_target(problem["reference"])
        sentences.append(len(steps))
        sentence_tokens += [len(tok.encode(s, add_special_tokens=False)) + 1 for s in steps]
        answers.append(len(tok.encode(answer, add_special_tokens=False)) + 1)
    median = lambda values: max(1, int(statistics.median(values)))  # noqa: E731
    return Workload(median(completions), median(sentences), median(sentence_tokens), median(answers))


def bench_context(method: str, preset: str, device: str, root) -> tuple[Method, RunContext]:
    overrides = [f"method={method}", "task=countdown4", f"device={device}"]
    ctx = RunContext(load_config(preset, None, [parse_override(o) for o in overrides]), root / method, root)
    instance = get_method_class(method)(ctx)
    instance.load_untrained()
    return instance, ctx


# ---------------------------------------------------------------------------------------- sampling
def ar_writer(method: Method, tokens: int) -> Callable[[list[dict], int, int], None]:
    """AR-SFT's sampling path with the length pinned: `tokens` tokens per sample, no early stop."""
    def sample(problems: list[dict], n: int, batch_size: int) -> None:
        def run_batch(rows):
            return sample_completions(method.model, method.ctx.tokenizer, [problems[r.problem]["prompt"] for r in rows],
                                      RowNoise.of(rows), 1.0, 1.0, tokens, stops=[])

        method.sample_batched(problems, n, batch_size, run_batch)

    return sample


def ladir_sampler(method: Method, work: Workload, **knobs) -> Callable[[list[dict], int, int], None]:
    """LaDiR's own `sample` at `knobs` (default PAPER_SETTING), its length pinned: the spec head always
    asks for another block up to `work.sentences` blocks, the VAE writes `work.sentence_tokens` per
    block, the answer its median."""
    reasoner = method.reasoner
    with torch.no_grad():
        reasoner.spec_head.weight.zero_()
        reasoner.spec_head.bias.fill_(-1e4)  # p(<SOA>) = 0: another <BOT> until max_blocks
    method.vae.max_sentence_tokens = work.sentence_tokens
    settings = {**PAPER_SETTING, **knobs}

    def sample(problems: list[dict], n: int, batch_size: int) -> None:
        method.sample(problems, n, max_blocks=work.sentences, max_answer_tokens=work.answer_tokens,
                      batch_size=batch_size, **settings)

    return sample


def pin_mdm_length(method: Method, work: Workload) -> int:
    """MDM's length pinned: a target as long as AR-SFT's completion, unmasked at the default decoder's
    MDM_TOKENS_PER_STEP, and `</s>` never drawn, so no row ends early (a fresh model's random text
    would end rows at random). Returns the steps."""
    method.options.gen_length = work.completion_tokens
    eos = torch.tensor([method.ctx.tokenizer.eos_token_id], device=method.ctx.device)
    method.model.get_output_embeddings().register_forward_hook(lambda module, args, out: out.index_fill_(-1, eos, -1e4))
    return math.ceil(work.completion_tokens / MDM_TOKENS_PER_STEP)


def mdm_figures(preset: str, device: str, root, repeats: int, problems_count: int, k: int = 100) -> dict:
    """MDM's time per sample against AR-SFT's at the same k and length, default and fastest decoding."""
    ar, ctx = bench_context("ar-sft", preset, device, root)
    mdm, _ = bench_context("mdm", preset, device, root)
    work = reference_workload(ctx)
    problems = ctx.task.problems("test")[:problems_count]
    batch, samples = ctx.config.eval.batch_size, k * len(problems)
    write_ar = ar_writer(ar, work.completion_tokens)
    steps = pin_mdm_length(mdm, work)
    timed = {}
    with torch.no_grad():
        for name, knobs in {"default": {}, "fast": MDM_FAST_SETTING}.items():
            def sample_mdm(knobs=knobs) -> None:
                mdm.sample(problems, k, steps=steps, batch_size=batch, **knobs)

            ratio, mdm_seconds, ar_seconds = paired_ratio(sample_mdm, lambda: write_ar(problems, k, batch), repeats,
                                                          ctx.device)
            timed[name] = {**knobs, "ratio_mdm_ar": ratio, "mdm_samples_per_s": samples / mdm_seconds,
                           "ar_samples_per_s": samples / ar_seconds}
    return {"sample_ratio_mdm_ar": timed["default"]["ratio_mdm_ar"],
            "sample_ratio_mdm_ar_fast": timed["fast"]["ratio_mdm_ar"],
            "details": {"gen_length": work.completion_tokens, "steps": steps, "k": k,
                        "problems": len(problems), "settings": timed}}


def paired_ratio(numerator: Callable[[], Any], denominator: Callable[[], Any], repeats: int,
                 device: torch.device) -> tuple[float, float, float]:
    """(median of t(numerator) / t(denominator) over `repeats` back-to-back pairs, median seconds of
    each), after one untimed warm-up of each: a drifting load on a shared machine moves both halves
    of a pair together."""
    ratios, tops, bottoms = [], [], []
    for index in range(max(1, repeats) + 1):
        top, bottom = median_seconds(numerator, 0, device, warm_up=False), median_seconds(denominator, 0, device,
                                                                                             warm_up=False)
        if index:  # the first pair warms up
            ratios.append(top / bottom)
            tops.append(top)
            bottoms.append(bottom)
    return statistics.median(ratios), statistics.median(tops), statistics.median(bottoms)


def setting_name(knobs: dict[str, Any]) -> str:
    return f"{knobs['solver']}-{knobs['steps']}" + ("" if knobs.get("write_reasoning", True) else "-no-text")


def ladir_breakdown(method: Method, sample: Callable[[], None], samples: int, batches: int,
                    device: torch.device) -> dict:
    """What one LaDiR sample's time is made of: each part of the real sampling path timed in place
    (wrapped for one run of `batches` batches after a warm-up), in seconds per sample, with the
    forward passes of each model per batch."""
    import ladir.method
    import ladir.pipeline

    parts = {"question prefill": (ladir.method, "start_sequence"), "denoising": (ladir.pipeline, "denoise_block"),
             "velocity evaluations": (ladir.pipeline, "velocity"), "block commits": (ladir.pipeline, "commit_block"),
             "VAE decoding": (method, "decode_reasoning"), "answer": (ladir.method, "decode_answer")}
    seconds = dict.fromkeys(parts, 0.0)
    passes = {"reasoner": 0, "vae_decoder": 0}

    def timed(name: str, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            started = time.perf_counter()
            out = fn(*args, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name] += time.perf_counter() - started
            return out

        return run

    def count(model: str) -> Callable:
        def hook(*_):
            passes[model] += 1

        return hook

    sample()  # warm-up
    with ExitStack() as stack:
        for name, (owner, attribute) in parts.items():
            stack.enter_context(patch.object(owner, attribute, timed(name, getattr(owner, attribute))))
        for model, module in (("reasoner", method.reasoner.backbone.base_model), ("vae_decoder", method.vae.decoder)):
            stack.callback(module.register_forward_hook(count(model)).remove)
        total = median_seconds(sample, 1, device, warm_up=False)
    seconds["solver steps and guidance"] = seconds.pop("denoising") - seconds["velocity evaluations"]
    seconds["other"] = total - sum(seconds.values())
    return {"seconds_per_sample": {name: value / samples for name, value in seconds.items()},
            "share": {name: value / total for name, value in seconds.items()},
            "passes_per_batch": {model: count / batches for model, count in passes.items()},
            "total_seconds_per_sample": total / samples}


def sampling_figures(preset: str, device: str, root, repeats: int, problems_count: int, k: int = 100,
                     solver_nfe: tuple[int, ...] = SOLVER_NFE) -> dict:
    ar, ctx = bench_context("ar-sft", preset, device, root)
    ladir, _ = bench_context("ladir", preset, device, root)
    work = reference_workload(ctx)
    problems = ctx.task.problems("test")[:problems_count]
    batch = ctx.config.eval.batch_size
    dev = ctx.device
    samples = k * len(problems)
    write_ar = ar_writer(ar, work.completion_tokens)

    def ar_run() -> None:
        write_ar(problems, k, batch)

    def ladir_run(knobs: dict[str, Any]) -> Callable[[], None]:
        sample = ladir_sampler(ladir, work, **knobs)
        return lambda: sample(problems, k, batch)

    solvers: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        ar_passes = [0]
        remove = ar.model.register_forward_hook(lambda *_: ar_passes.__setitem__(0, ar_passes[0] + 1))
        ar_run()
        remove.remove()
        grid = [{"solver": solver, "steps": nfe} for solver in SOLVERS for nfe in solver_nfe
                if nfe % SOLVERS[solver].evaluations_per_step == 0]
        for knobs in [*grid, PAPER_SETTING, FAST_SETTING, {**PAPER_SETTING, "write_reasoning": False},
                      {**FAST_SETTING, "write_reasoning": False}]:
            name = setting_name(knobs)
            if name not in solvers:
                ratio, ladir_seconds, ar_seconds = paired_ratio(ladir_run(knobs), ar_run, repeats, dev)
                solvers[name] = {**knobs, "nfe_per_block": knobs["steps"], "ratio_ladir_ar": ratio,
                                 "ladir_s_per_sample": ladir_seconds / samples, "ar_s_per_sample": ar_seconds / samples}
        batches = math.ceil(samples / batch)
        breakdown = {setting_name(knobs): ladir_breakdown(ladir, ladir_run(knobs), samples, batches, dev)
                     for knobs in (PAPER_SETTING, FAST_SETTING)}
        # k = 10: one problem's 10 samples per batch, against batches filled from 10 problems
        ten = ctx.task.problems("test")[: max(1, batch // 10)]
        alone = median_seconds(lambda: [write_ar([p], 10, batch) for p in ten], repeats, dev)
        together = median_seconds(lambda: write_ar(ten, 10, batch), repeats, dev)
    paper, fast = solvers[setting_name(PAPER_SETTING)], solvers[setting_name(FAST_SETTING)]
    answer_only = solvers[setting_name({**FAST_SETTING, "write_reasoning": False})]
    return {"sample_ratio_ladir_ar": paper["ratio_ladir_ar"], "sample_ratio_ladir_ar_fast": fast["ratio_ladir_ar"],
            "sample_ratio_ladir_ar_answer_only": answer_only["ratio_ladir_ar"],
            "batching_speedup": alone / together,
            "details": {"workload": work.__dict__, "k": k, "problems": len(problems), "batch_size": batch,
                        "ar_samples_per_s": 1 / paper["ar_s_per_sample"],
                        "ladir_samples_per_s": 1 / paper["ladir_s_per_sample"],
                        "fast_setting": FAST_SETTING, "ar_passes_per_batch": ar_passes[0] / batches,
                        "solvers": solvers, "breakdown": breakdown,
                        "k10_one_problem_samples_per_s": 10 * len(ten) / alone,
                        "k10_across_problems_samples_per_s": 10 * len(ten) / together}}


def cache_figure(preset: str, device: str, root, repeats: int, rows: int = 100, blocks: int = 8) -> dict:
    """One denoising step's velocity with 8 finished blocks committed, KV-cached against recomputed."""
    from ladir.pipeline import commit_block, start_sequence, velocity

    method, ctx = bench_context("ladir", preset, device, root)
    reasoner = method.reasoner
    question = [ctx.tokenizer.bos_token_id, *ctx.tokenizer.encode(ctx.task.problems("test")[0]["prompt"],
                                                                   add_special_tokens=False)]
    noise = RowNoise(range(rows), ctx.device)
    shape = (reasoner.latent_tokens, reasoner.latent_dim)
    active = torch.ones(rows, dtype=torch.bool, device=ctx.device)
    seconds = {}
    with torch.no_grad():
        for cache in (True, False):
            seq = start_sequence(reasoner, [question] * rows, cache=cache)
            for _ in range(blocks):
                commit_block(seq, noise.normal(*shape), active)
            z = noise.normal(*shape)
            seconds[cache] = median_seconds(lambda: velocity(seq, z, 0.5, active), repeats, ctx.device)
    return {"cache_ratio": seconds[True] / seconds[False],
            "details": {"rows": rows, "blocks": blocks, "cached_step_s": seconds[True],
                        "uncached_step_s": seconds[False]}}


# ---------------------------------------------------------------------------------------- training
def matmul_peak_flops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """fp32 FLOP/s of a square matmul, all threads: the machine's attainable peak for this dtype."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = median_seconds(lambda: torch.mm(a, b), repeats, device)
    return 2 * size**3 / seconds


def training_flops_per_sequence(model, tokens: float, seq_len: float) -> float:
    """6 N per token (forward 2N, backward 4N; N = every weight a token multiplies, the LM head
    included, the embedding lookup not) plus attention's 12 L d S per token (Kaplan et al. 2020)."""
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    matmul_params = sum(p.numel() for p in model.parameters()) - embedding + (embedding if tied else 0)
    return tokens * (6 * matmul_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len)


def train_step_seconds(module: torch.nn.Module, loss_of: Callable[[], torch.Tensor], repeats: int,
                       device: torch.device) -> float:
    """One optimizer step (forward, backward, AdamW update) as the Trainer takes it."""
    module.train().requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_of().backward()
        optimizer.step()

    return median_seconds(step, repeats, device)


def training_figures(preset: str, device: str, root, repeats: int) -> dict:
    ar, ctx = bench_context("ar-sft", preset, device, root)
    ladir, _ = bench_context("ladir", preset, device, root)
    batch = ctx.batch("sft", 0)
    max_length = ctx.config.model.max_length
    ar_seconds = train_step_seconds(ar.model, lambda: lm_loss(ar.model, ctx.tokenizer, batch, max_length,
                                                              device=ctx.device), repeats, ctx.device)
    reasoner = ladir.reasoner  # stage 1's architecture; where its weights start from does not change the cost
    oracle = ladir.oracle_batch(batch)
    ladir_seconds = train_step_seconds(reasoner, lambda: ladir.stage1_losses(reasoner, oracle)[0], repeats,
                                       ctx.device)
    tokens = [len(ctx.tokenizer.encode(p["prompt"] + p["reference"], add_special_tokens=False)) + 2 for p in batch]
    flops = sum(training_flops_per_sequence(ar.model, t, t) for t in tokens)
    peak = matmul_peak_flops(ctx.device)
    return {"train_ratio_ladir_ar": ar_seconds / ladir_seconds, "mfu": flops / ar_seconds / peak,
            "details": {"batch_size": len(batch), "ar_sequences_per_s": len(batch) / ar_seconds,
                        "ladir_stage1_sequences_per_s": len(batch) / ladir_seconds,
                        "ar_train_flops_per_s": flops / ar_seconds, "matmul_peak_flops_per_s": peak,
                        "parameters": sum(p.numel() for p in ar.model.parameters())}}


# ---------------------------------------------------------------------------------------- the run
def run_bench(preset: str = "tiny", device: str = "auto", repeats: int = 3, scale: float = 1.0,
              root=None) -> dict[str, Any]:
    """Every figure, with the details behind it and the environment it was measured in."""
    import tempfile
    from pathlib import Path

    from harness.revision import git_revision
    from harness.tools.bench_checkers import checker_figures

    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(root or scratch)
        # scale < 1 (CI) shrinks the work; the figures' definitions (k = 100, 8 blocks) hold at scale 1
        problems, k = max(1, round(2 * scale)), max(10, min(100, round(100 * scale)))
        solver_nfe = SOLVER_NFE if scale >= 1 else SOLVER_NFE[:1]
        for name, measure in (("sampling", lambda: sampling_figures(preset, device, root, repeats, problems, k,
                                                                    solver_nfe)),
                              ("mdm", lambda: mdm_figures(preset, device, root, repeats, problems, k)),
                              ("cache", lambda: cache_figure(preset, device, root, repeats)),
                              ("training", lambda: training_figures(preset, device, root, repeats)),
                              ("checkers", lambda: checker_figures(repeats=repeats, scale=scale))):
            console.print(f"[bench] {name} ...")
            started = time.perf_counter()
            result = measure()
            details[name] = {**result.pop("details", {}), "seconds": round(time.perf_counter() - started, 1)}
            figures.update(result)
    resolved = resolve_device(device)
    environment = {"device": str(resolved), "cpu": platform.processor() or platform.machine(),
                   "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
                   **git_revision()}
    if str(resolved).startswith("cuda"):
        environment["gpu"] = torch.cuda.get_device_name()
    return {"figures": {key: figures[key] for key in KEYS},
            "targets": {key: {"target": target, "bound": bound} for key, _, target, bound in FIGURES},
            "preset": preset, "repeats": repeats, "scale": scale, "details": details, "environment": environment}


def met(key: str, value: float) -> bool:
    target, bound = next((t, b) for k, _, t, b in FIGURES if k == key)
    return value <= target if bound == "max" else value >= target


def figures_table(report: dict[str, Any]):
    """The figures beside their targets, as a rich Table."""
    from rich.table import Table

    table = Table(title=f"ladir-bench bench ({report['preset']}, {report['environment']['device']}, "
                        f"median of {report['repeats']})")
    for column in ("figure", "what", "value", "target", "met"):
        table.add_column(column)
    for key, what, target, bound in FIGURES:
        value = report["figures"][key]
        table.add_row(key, what, f"{value:,.3g}" if value < 1000 else f"{value:,.0f}",
                      f"{'<=' if bound == 'max' else '>='} {target:,}", "yes" if met(key, value) else "[red]no[/]")
    return table
