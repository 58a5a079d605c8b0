"""Do LaDiR's latent blocks carry the reasoning? A probe of a trained run (`ladir-bench probe`).

The answer head is read with greedy decoding after blocks of known provenance, and judged by the
task's checker:

    answer_acc_oracle    the VAE latents of the reference sentences
    answer_acc_shuffled  the oracle blocks of another problem (a derangement)
    answer_acc_noise     N(0, I) blocks, as many as the oracle has
    pass1_generated      the model's own blocks (one trajectory, `steps` Euler steps)
    pass1_swapped        blocks the model generated for another problem

If the answer reads the blocks, oracle >> shuffled and generated >> swapped; if it answers from the
question alone, all of them are equal. `block_valid` is the fraction of generated blocks that decode
(through the VAE) to a valid step (Countdown: operands available, arithmetic exact; omitted for tasks
without a step checker), and `block_arithmetic` the fraction whose arithmetic alone is right.
`latent_shift` is the RMS distance, per normalised coordinate, between the first block denoised
with 1, 5, 10 and 30 Euler steps from the same initial noise: a flat step-scaling curve with a
large shift means the blocks change but the answer ignores them.

Where generation of valid steps breaks (tasks with a step checker), on the first block:

    decoder_tolerance    valid-step rate of the oracle latent plus N(0, sigma^2) noise (normalised
                         units), decoded by the VAE: how far from a code the decoder still reads it
    denoise_reach        valid-step rate after the reasoner denoises the oracle latent noised to t0
                         (z = (1 - t0) z0 + t0 eps); t0 = 1 is generation from pure noise

    first_block_valid    valid-step rate of the first block generated from pure noise with 1, 5, 10
                         and 30 Euler steps (the same initial noise): if it does not rise with the
                         steps, neither can an answer that follows the blocks
    swapped_code_valid   valid-step rate of another problem's oracle first latent (the derangement)
                         decoded after this problem's question: near 0 when a code names its step's
                         numbers; high when a decoder that reads the context writes a step of *this*
                         problem from it, so the code says which step, not which numbers (then the
                         shuffled and swapped figures do not feed the answer wrong steps)

A decoder that tolerates sigma = 0.5 but a reach that collapses at t0 = 0.75 says the flow does not
find the question's region from noise; a fragile decoder says the latent space itself is the limit.

The same probe reads a method that writes its reasoning as text (AR-SFT, MTP, a pretrained model;
`probe_autoregressive`): its "blocks" are the reasoning sentences themselves, so the oracle figure is
the answer written after the reference reasoning text. That is the ceiling on what reading the
reasoning can give at this model size, the scale for LaDiR's answer_acc_oracle.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import torch

from harness.errors import BadInput
from harness.jsonl import write_json_atomic
from harness.lm import sample_completions
from harness.methods import AutoregressiveMethod
from harness.progress import progress_bar
from harness.train.checkpoint import final_checkpoint
from ladir.pipeline import denoise_block, start_sequence
from ladir.reasoner import stacked_blocks
from ladir.sampler import FlowMatchEuler
from tasks import Problem, Task

SHIFT_STEPS = (1, 5, 10, 30)
TOLERANCE_SIGMAS = (0.0, 0.25, 0.5, 1.0)
REACH_T0 = (0.25, 0.5, 0.75, 1.0)


def derangement(n: int, seed: int = 0) -> list[int]:
    """A uniformly random cyclic permutation (Sattolo): perm[i] != i for every i when n >= 2."""
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i: never a fixed point
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def answer_accuracy(task: Task, problems: list[Problem], answers: list[str]) -> float:
    verdicts = task.check_many(list(zip(problems, answers, strict=True)))
    return sum(v.passed for v in verdicts) / max(1, len(verdicts))


def generated_step_validity(task: Task, problems: list[Problem], reasoning: list[list[str]]) -> dict:
    """`block_valid` and `block_arithmetic` of each problem's generated sentences; {} for a task
    without a step checker."""
    checks = [task.steps_valid(problem, steps) for problem, steps in zip(problems, reasoning, strict=True)]
    if checks[0] is None:
        return {}
    valid = [ok for verdicts in checks for ok in verdicts]
    # a valid step needs its arithmetic right and its operands taken from the pool: which one fails?
    arithmetic = [ok for steps in reasoning for ok in task.steps_arithmetic(steps)]
    return {"block_valid": sum(valid) / max(1, len(valid)), "block_arithmetic": sum(arithmetic) / max(1, len(arithmetic))}


def probe_method(method, task: Task, problems: list[Problem], steps: int = 10, seed: int = 0,
                 batch_size: int = 100, knobs: dict | None = None) -> dict:
    """The probe's figures on `problems` (a loaded LaDiR method); see the module docstring."""
    knobs = {**(knobs or {}), "steps": steps}
    perm = derangement(len(problems), seed)
    oracle, noise, generated = [], [], []
    shifts = {s: [] for s in SHIFT_STEPS}
    device = method.ctx.device
    with progress_bar("probe", total=len(problems)) as bar:
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + start)
                blocks = method.oracle_batch(chunk).blocks
                oracle += blocks
                noise += [torch.randn_like(b) for b in blocks]
                z, present = method.sample_blocks(chunk, **knobs)
                generated += [z[i][present[i]] for i in range(len(chunk))]
                for s in SHIFT_STEPS:  # the first block from the same initial noise
                    torch.manual_seed(seed + start + 1)
                    shifts[s].append(method.sample_blocks(chunk, **{**knobs, "steps": s, "max_blocks": 1})[0][:, 0])
            bar.update(advance=len(chunk))
    swapped = [generated[perm[i]] for i in range(len(problems))]
    shuffled = [oracle[perm[i]] for i in range(len(problems))]

    def acc(blocks: list[torch.Tensor]) -> float:
        answers = []
        for start in range(0, len(problems), batch_size):
            answers += method.answers_given_blocks(problems[start : start + batch_size], blocks[start : start + batch_size])
        return answer_accuracy(task, problems, answers)

    result = {
        "answer_acc_oracle": acc(oracle),
        "answer_acc_shuffled": acc(shuffled),
        "answer_acc_noise": acc(noise),
        "pass1_generated": acc(generated),
        "pass1_swapped": acc(swapped),
    }
    # generated blocks decoded a batch of problems at a time (block by block where the decoder reads the
    # earlier sentences)
    per_problem = []
    for start in range(0, len(problems), batch_size):
        z, present = stacked_blocks(generated[start : start + batch_size], oracle[0].shape[-2:], device)
        per_problem += method.decode_reasoning(problems[start : start + batch_size], z, present)
    step_figures = generated_step_validity(task, problems, per_problem)
    if step_figures:
        result.update(step_figures)
        result.update(first_block_validity(method, task, problems, [b[0] for b in oracle], steps, seed, batch_size,
                                           perm))
    result["blocks_generated_mean"] = sum(len(g) for g in generated) / max(1, len(generated))
    result["blocks_oracle_mean"] = sum(len(b) for b in oracle) / max(1, len(oracle))
    first = {s: torch.cat(v) for s, v in shifts.items()}
    result["latent_shift"] = {f"{a}-{b}": float((first[a] - first[b]).pow(2).mean(-1).mean(-1).sqrt().mean())
                              for a, b in zip(SHIFT_STEPS, SHIFT_STEPS[1:])}
    result["examples"] = [{"task_id": problem["task_id"], "reference": problem.get("reference"), "generated_blocks": steps}
                          for problem, steps in zip(problems[:3], per_problem)]
    return result


@torch.no_grad()
def first_block_validity(method, task: Task, problems: list[Problem], first: list[torch.Tensor], steps: int,
                         seed: int, batch_size: int, perm: list[int]) -> dict:
    """`decoder_tolerance`, `denoise_reach`, `first_block_valid` and `swapped_code_valid` (module
    docstring) from the oracle first blocks `first`; `perm` is the probe's derangement.
    Denoising from t0 takes round(steps * t0) Euler steps, the step size of generation from noise."""
    generator = torch.Generator().manual_seed(seed)
    z0 = torch.stack(first).cpu()
    eps = torch.randn(z0.shape, generator=generator)
    present = torch.ones(len(problems), 1, dtype=torch.bool, device=method.ctx.device)

    def valid_rate(z: torch.Tensor) -> float:
        hits = 0
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            rows = z[start : start + batch_size, None].to(method.ctx.device)
            texts = method.decode_reasoning(chunk, rows, present[: len(chunk)])
            hits += sum(task.steps_valid(p, t)[0] for p, t in zip(chunk, texts, strict=True))
        return hits / len(problems)

    def denoised(t0: float, euler_steps: int) -> torch.Tensor:
        out = []
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            zt = ((1 - t0) * z0[start : start + batch_size] + t0 * eps[start : start + batch_size]).to(method.ctx.device)
            seq = start_sequence(method.reasoner, [method._question_ids(p) for p in chunk])
            active = torch.ones(len(chunk), dtype=torch.bool, device=method.ctx.device)
            out.append(denoise_block(seq, FlowMatchEuler(), euler_steps, active, z=zt, t_start=t0).cpu())
        return torch.cat(out)

    @functools.cache
    def reach(t0: float, euler_steps: int) -> float:  # t0 = 1 at `steps` is also a first_block_valid point
        return valid_rate(denoised(t0, euler_steps))

    return {"decoder_tolerance": {str(sigma): valid_rate(z0 + sigma * eps) for sigma in TOLERANCE_SIGMAS},
            "denoise_reach": {str(t0): reach(t0, max(1, round(steps * t0))) for t0 in REACH_T0},
            "first_block_valid": {str(s): reach(1.0, s) for s in SHIFT_STEPS},
            "swapped_code_valid": valid_rate(z0[perm])}


@torch.no_grad()
def probe_autoregressive(method: AutoregressiveMethod, task: Task, problems: list[Problem], seed: int = 0,
                         batch_size: int = 100) -> dict:
    """The probe's figures for a method that writes its reasoning as text (module docstring): greedy
    answers after the reference reasoning (oracle), another problem's (shuffled), its own greedy
    reasoning (generated) and another problem's (swapped). No noise or latent figures: text has none."""
    perm = derangement(len(problems), seed)
    max_new_tokens = method.sample_knobs({}).max_new_tokens

    def completions(reasoning: list[str | None]) -> list[str]:
        """Greedy completion of each problem's prompt followed by `reasoning` (None: from the prompt
        alone), with the given reasoning kept in front so the checker reads the whole completion."""
        texts = []
        with progress_bar("probe", total=len(problems)) as bar:
            for start in range(0, len(problems), batch_size):
                rows = range(start, min(start + batch_size, len(problems)))
                prompts = [method.prompt(problems[i]) + (reasoning[i] or "") for i in rows]
                written = sample_completions(method.model, method.ctx.tokenizer, prompts, None, 0.0, 1.0, max_new_tokens,
                                             add_bos=method.add_bos)
                texts += [method.finish((reasoning[i] or "") + text) for i, text in zip(rows, written, strict=True)]
                bar.update(advance=len(rows))
        return texts

    def accuracy_after(reasoning: list[list[str]]) -> float:
        """Greedy answer accuracy when problem i's reasoning is `reasoning[i]`, the sentences joined."""
        return answer_accuracy(task, problems, completions([" ".join(sentences) for sentences in reasoning]))

    oracle = [task.split_target(p["reference"])[0] for p in problems]
    generated_texts = completions([None] * len(problems))
    generated = [task.split_target(text)[0] for text in generated_texts]
    result = {
        "answer_acc_oracle": accuracy_after(oracle),
        "answer_acc_shuffled": accuracy_after([oracle[j] for j in perm]),
        "pass1_generated": answer_accuracy(task, problems, generated_texts),
        "pass1_swapped": accuracy_after([generated[j] for j in perm]),
    }
    result.update(generated_step_validity(task, problems, generated))
    result["blocks_generated_mean"] = sum(map(len, generated)) / max(1, len(generated))
    result["blocks_oracle_mean"] = sum(map(len, oracle)) / max(1, len(oracle))
    result["examples"] = [{"task_id": problem["task_id"], "reference": problem.get("reference"), "generated": text}
                          for problem, text in zip(problems[:3], generated_texts)]
    return result


def is_probeable(method_class: type) -> bool:
    """LaDiR (latent blocks), a method with a probe of its own (LD4LG: `probe_figures`), or a method
    that writes its reasoning as text."""
    return (hasattr(method_class, "answers_given_blocks") or hasattr(method_class, "probe_figures")
            or issubclass(method_class, AutoregressiveMethod))


def run_probe(method, ctx, task: Task, split: str, limit: int, steps: int, seed: int, phase: str | None,
              knobs: dict | None = None) -> tuple[dict, Path]:
    """Probe a run (LaDiR: `phase` stage1, stage2, or the last finished; LD4LG or a text method: its
    final checkpoint) and write runs/NAME/probe/<phase>-step<N>.json."""
    latent = hasattr(method, "answers_given_blocks")
    own = hasattr(method, "probe_figures")
    stages = () if latent else getattr(method, "stages", ())
    if latent and phase is not None:
        method.load_reasoner(phase)
    if not latent:
        if knobs:
            raise BadInput(f"--knob applies to LaDiR's sampling; the {method.name} probe decodes greedily")
        if phase is not None and phase not in stages:
            raise BadInput(f"method {method.name!r} has no checkpoint {phase!r} to probe (its phases: {', '.join(stages) or 'none'})")
    problems = [p for p in task.problems(split) if p.get("reference")][:limit]
    if len(problems) < 2:
        raise BadInput(f"task {task.name!r} split {split!r} has fewer than 2 problems with reference reasoning "
                       "(the probe swaps blocks between problems)")
    if latent:
        figures = probe_method(method, task, problems, steps=steps, seed=seed, knobs=knobs)
        checkpoint = method.checkpoint
    else:
        figures = (method.probe_figures(task, problems, steps=steps, seed=seed) if own
                   else probe_autoregressive(method, task, problems, seed=seed))
        checkpoint = ({"phase": stages[-1], "step": final_checkpoint(ctx.run_dir / stages[-1])[0]} if stages
                      else {"phase": "pretrained", "step": 0})
    record = {"run": ctx.run_dir.name, "checkpoint": {"phase": checkpoint["phase"], "step": checkpoint["step"]},
              "task": task.name, "split": split, "n_problems": len(problems), "steps": steps if latent or own else None,
              "seed": seed,
              "knobs": knobs or {}, **figures}
    path = ctx.run_dir / "probe" / f"{checkpoint['phase']}-step{checkpoint['step']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return record, path
