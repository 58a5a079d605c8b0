"""LaDiR probe and the reasoner's consistency contracts.

- `derangement` and Countdown's `steps_valid`, the two pure helpers the probe leans on;
- teacher forcing (one pass over question | clean blocks | answer | noisy copies) and the cached
  sampling pipeline give the same velocities and answer logits, with and without the answer seeing
  the question;
- `answer_sees_question=False` keeps the question out of the answer, classifier-free guidance
  reduces to its two branches at scales 0 and 1, the reasoner started from a decoder reproduces it,
  and the diversity force is normalised by n - 1;
- the text probe of an AR method tells a model that reads its reasoning from one that answers from
  the question;
- `ladir-bench probe` end to end on a micro run (LaDiR and AR-SFT), including its bad-input contract.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from ladir import probe
from ladir.pipeline import (
    commit_block,
    commit_blocks,
    generate_blocks,
    start_sequence,
    unconditional_sequence,
    velocity,
)
from ladir.probe import derangement, is_probeable
from ladir.reasoner import (
    QUESTION,
    BlockDiffusionReasoner,
    LatentSequence,
    ReasoningBatch,
    answer_chunk_ids,
    block_attention_mask,
    teacher_forcing_sequence,
)
from ladir.sampler import FlowMatchEuler, diversity_force
from tasks import get_task
from tests.conftest import (
    LADIR_MICRO_OPTIONS,
    copy_run,
    ids,
    micro_args,
    micro_lm,
    run_cli,
)

LATENT = (2, 3)  # (L_b, d_z) of the `reasoner` fixture


# ---------------------------------------------------------------------------------- helpers
def test_derangement_is_a_permutation_without_fixed_points():
    for n in range(2, 61):
        for seed in (0, 1, 7, 123):
            perm = derangement(n, seed)
            assert sorted(perm) == list(range(n)), (n, seed)
            assert all(p != i for i, p in enumerate(perm)), (n, seed, perm)
    assert derangement(5, 3) == derangement(5, 3)  # a pure function of (n, seed)


def test_countdown_steps_valid():
    task = get_task("countdown4", val_size=5, test_size=5)
    problem = task.problems("val")[0]
    sentences = task.split_target(problem["reference"])[0]
    assert len(sentences) == 3 and task.steps_valid(problem, sentences) == [True] * 3

    a, b = problem["numbers"][:2]
    absent = next(n for n in range(1, 100) if n not in problem["numbers"])
    assert task.steps_valid(problem, [f"{a}+{b}={a + b + 1}."]) == [False]  # wrong arithmetic
    assert task.steps_valid(problem, [f"{absent}+{a}={absent + a}."]) == [False]  # not in the pool
    assert task.steps_valid(problem, ["this is not a step"]) == [False]

    # A fixed pool without duplicates: a consumed number (given or computed) cannot come back.
    pool = {"numbers": [3, 5, 7, 11], "target": 50}
    assert task.steps_valid(pool, ["3+5=8.", "3*7=21."]) == [True, False]  # 3 already consumed
    assert task.steps_valid(pool, ["3+5=8.", "8*7=56.", "8+11=19."]) == [True, True, False]  # 8 consumed too
    # an invalid step consumes nothing
    assert task.steps_valid(pool, ["3+5=8.", "9+7=16.", "8+7=15."]) == [True, False, True]
    assert task.steps_valid(pool, ["7-3=4.", "11/4=2."]) == [True, False]  # inexact division
    # a number given twice may be used twice
    assert task.steps_valid({"numbers": [4, 4, 2], "target": 8}, ["4*4=16.", "16/2=8."]) == [True, True]
    assert get_task("math500").steps_valid({}, ["x"]) is None  # no step checker outside Countdown


# ---------------------------------------------------------------------------------- the text probe (AR methods)
class _ScriptedAR:
    """An AR method whose greedy writer is scripted (`write(problem, reasoning) -> continuation`)."""
    add_bos = True
    model = None
    ctx = type("Context", (), {"tokenizer": None})

    @staticmethod
    def prompt(problem):
        return problem["prompt"]

    @staticmethod
    def finish(text):
        return text

    @staticmethod
    def sample_knobs(_):
        return type("Knobs", (), {"max_new_tokens": 64})


def _probe_scripted(monkeypatch, write) -> dict:
    task = get_task("countdown4", val_size=12, test_size=5)
    problems = task.problems("val")
    by_prompt = {p["prompt"]: p for p in problems}

    def sample_completions(model, tokenizer, prompts, noise, temperature, top_p, max_new_tokens, add_bos):
        assert temperature == 0.0  # the probe's answers are greedy
        out = []
        for text in prompts:
            problem = next(p for prompt, p in by_prompt.items() if text.startswith(prompt))
            out.append(write(task, problem, task.split_target(text[len(problem["prompt"]):])[0]))
        return out

    monkeypatch.setattr(probe, "sample_completions", sample_completions)
    return probe.probe_autoregressive(_ScriptedAR(), task, problems)


def test_text_probe_tells_reading_the_reasoning_from_answering_from_the_question(monkeypatch):
    def reader(task, problem, sentences):  # writes the reference from a bare prompt, then answers what its steps build
        if not sentences:
            return problem["reference"]
        return " " + (task.answer_from_steps(problem, sentences) or "The answer is 0.")

    figures = _probe_scripted(monkeypatch, reader)
    # another problem's steps use numbers this problem does not have: no answer follows from them
    assert figures["answer_acc_oracle"] == 1.0 and figures["answer_acc_shuffled"] == 0.0
    assert figures["pass1_generated"] == 1.0 and figures["pass1_swapped"] == 0.0
    assert figures["block_valid"] == 1.0 and figures["blocks_generated_mean"] == figures["blocks_oracle_mean"] == 3
    assert "answer_acc_noise" not in figures and "latent_shift" not in figures  # text has no noise or latents

    def from_the_question(task, problem, sentences):  # the right answer whatever reasoning precedes it
        return " " + problem["reference"][problem["reference"].index("The answer is"):]

    figures = _probe_scripted(monkeypatch, from_the_question)
    assert figures["answer_acc_oracle"] == figures["answer_acc_shuffled"] == 1.0
    assert figures["pass1_generated"] == figures["pass1_swapped"] == 1.0
    assert figures["block_valid"] == 0.0 and figures["blocks_generated_mean"] == 0  # it writes no steps


def test_probeable_methods():
    from harness.methods import get_method_class

    assert [name for name in ("ladir", "ar-sft", "mtp", "pretrained", "coconut", "ld4lg", "mdm")
            if is_probeable(get_method_class(name))] == ["ladir", "ar-sft", "mtp", "pretrained", "ld4lg"]


# ---------------------------------------------------------------------------------- teacher forcing vs. the pipeline
def _two_problem_batch(tokenizer) -> ReasoningBatch:
    """Questions of different lengths (one left-padded), 3 blocks and 1 block, answers of different lengths."""
    torch.manual_seed(5)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return ReasoningBatch(
        question_ids=[[bos, *ids(tokenizer, "Use 12 7 3 to make 57.\n")], [bos, *ids(tokenizer, "Use 1 2 3.\n")]],
        answer_ids=[[*ids(tokenizer, "The answer is (12+7)*3."), eos], [*ids(tokenizer, "The answer is 6."), eos]],
        blocks=[torch.randn(3, *LATENT), torch.randn(1, *LATENT)],
    )


@pytest.mark.parametrize("answer_sees_question", [True, False])
def test_teacher_forcing_and_cached_sampling_agree(reasoner, tokenizer, answer_sees_question):
    reasoner.answer_sees_question = answer_sees_question
    reasoner.eval()
    batch = _two_problem_batch(tokenizer)
    counts = batch.num_blocks
    most = int(counts.max())

    # The teacher-forcing pass with two noisy copies per block; reproduce its draws (one t per block
    # copy, then the noise) from the seed.
    repeats = 2
    torch.manual_seed(9)
    tf = teacher_forcing_sequence(reasoner, batch, fm_repeats=repeats)
    torch.manual_seed(9)
    t = torch.rand(len(batch), repeats, most)
    noise = torch.randn(len(batch), repeats, most, *LATENT)
    z0 = torch.stack([torch.cat([b, torch.zeros(most - len(b), *LATENT)]) for b in batch.blocks])[:, None]
    assert torch.allclose(tf.target, noise - z0)  # the reproduction is faithful
    z_t = (1 - t[..., None, None]) * z0 + t[..., None, None] * noise

    with torch.no_grad():
        hidden = tf.seq.forward()
        width = reasoner.block_width
        blocks_end = tf.question_width + most * width
        answer_end = blocks_end + tf.answer_ids.size(1)
        noisy = hidden[:, answer_end:].reshape(len(batch), repeats, most, width, -1)  # repeat-major copies
        tf_velocity = reasoner.velocity_head(noisy[..., reasoner.latent_columns(), :])  # (B, R, most, L_b, d_z)
        tf_logits = reasoner.lm_logits(hidden[:, blocks_end:answer_end])

        # The cached pipeline: question, clean oracle blocks 0..b-1 committed, then the velocity at z_t of block b.
        for b in range(most):
            seq = start_sequence(reasoner, batch.question_ids)
            for earlier in range(b):
                commit_block(seq, z0[:, 0, earlier], earlier < counts)
            active = b < counts
            for r in range(repeats):
                u = velocity(seq, z_t[:, r, b], t[:, r, b], active)
                assert torch.allclose(u[active], tf_velocity[active, r, b], atol=1e-4), (b, r)

        # The answer after all oracle blocks, written by the cached sequence in one chunk.
        seq = start_sequence(reasoner, batch.question_ids)
        commit_blocks(seq, batch.blocks)
        answer_ids, valid = answer_chunk_ids(reasoner, batch)
        logits = reasoner.lm_logits(seq.run(seq.token_chunk(answer_ids, valid)))
    assert torch.allclose(logits[valid], tf_logits[valid], atol=1e-4)


# ---------------------------------------------------------------------------------- answer_sees_question
def _answer_logits(reasoner, question: list[int], blocks: torch.Tensor, answer: list[int]) -> torch.Tensor:
    """LM logits of `<SOA> answer` after `question` and the committed `blocks` (N, L_b, d_z), one row."""
    seq = start_sequence(reasoner, [question])
    commit_blocks(seq, [blocks])
    return reasoner.lm_logits(seq.run(seq.token_chunk(torch.tensor([[reasoner.soa_id, *answer]]))))


def test_answer_without_the_question_reads_only_the_blocks(tokenizer):
    # The mask removes answer -> question attention. With one layer that removes every path from the
    # question to the answer; from the second layer on, the blocks' hidden states (blocks do attend to
    # the question) carry question information to the answer, so exact invariance is a one-layer
    # property and the end-to-end check uses a one-layer backbone.
    bos = tokenizer.bos_token_id
    questions = [[bos, *ids(tokenizer, "Use 12 7 3 to make 57.\n")], [bos, *ids(tokenizer, "Use 45 9 1 to make 36.\n")]]
    assert len(questions[0]) == len(questions[1])
    answer = ids(tokenizer, "The answer is 7.")
    torch.manual_seed(2)
    blocks = torch.randn(2, *LATENT)
    one_layer = micro_lm(tokenizer, num_layers=1)
    torch.manual_seed(0)
    reasoner = BlockDiffusionReasoner(one_layer, tokenizer, *LATENT).eval()
    with torch.no_grad():
        for sees, same in ((False, True), (True, False)):
            reasoner.answer_sees_question = sees
            first, second = (_answer_logits(reasoner, q, blocks, answer) for q in questions)
            assert torch.allclose(first, second, atol=1e-6) == same, sees
            # the blocks do matter either way
            assert not torch.allclose(first, _answer_logits(reasoner, questions[0], -blocks, answer), atol=1e-4)

    # The rule itself, at any depth: answer queries see no question key, everything else is unchanged.
    seq = LatentSequence(reasoner, 1, cache=False)
    seq.append(seq.token_chunk(torch.tensor([questions[0][:3]]), role=QUESTION))
    seq.append(seq.block_chunk(blocks[:1], 0.0))
    seq.append(seq.token_chunk(torch.tensor([[reasoner.soa_id, *answer[:2]]])))
    meta = seq.metadata()
    full, masked = block_attention_mask(meta, meta, True)[0, 0], block_attention_mask(meta, meta, False)[0, 0]
    answer_rows, question_cols = slice(3 + reasoner.block_width, None), slice(0, 3)
    assert torch.isinf(masked[answer_rows, question_cols]).all()
    assert not torch.isinf(full[answer_rows, question_cols]).any()
    masked[answer_rows, question_cols] = 0.0
    assert torch.equal(full, masked)


# ---------------------------------------------------------------------------------- classifier-free guidance
def test_cfg_scale_one_is_plain_sampling_and_the_velocity_interpolates_the_branches(reasoner, tokenizer):
    reasoner.eval()
    question = [[tokenizer.bos_token_id, *ids(tokenizer, "Use 12 7 3 to make 57.\n")]] * 3
    sampler = FlowMatchEuler(init_noise=1.5)
    runs = {}
    for name, scale in (("plain", None), ("one", 1.0), ("two", 2.0)):
        torch.manual_seed(4)
        seq = start_sequence(reasoner, question)
        kwargs = {} if scale is None else {"cfg_scale": scale}
        runs[name] = generate_blocks(seq, sampler, steps=3, max_blocks=2, **kwargs)
    assert torch.equal(runs["one"][0], runs["plain"][0]) and torch.equal(runs["one"][1], runs["plain"][1])
    assert not torch.allclose(runs["two"][0], runs["plain"][0])  # a real guidance scale does change the blocks

    # After a committed block in both branches, u(s=0) is the unconditional branch and u(s=1) the conditional one.
    torch.manual_seed(6)
    with torch.no_grad():
        seq = start_sequence(reasoner, question)
        uncond = unconditional_sequence(seq)
        active = torch.tensor([True, True, False])
        commit_block(seq, torch.randn(3, *LATENT), torch.ones(3, dtype=torch.bool), uncond)
        z = torch.randn(3, *LATENT)
        conditional = velocity(seq, z, 0.6, active)
        alone = velocity(uncond, z, 0.6, active)
        assert torch.allclose(velocity(seq, z, 0.6, active, uncond, cfg_scale=0.0), alone, atol=1e-6)
        assert torch.allclose(velocity(seq, z, 0.6, active, uncond, cfg_scale=1.0), conditional, atol=1e-6)
        assert torch.allclose(velocity(seq, z, 0.6, active, uncond, cfg_scale=3.0),
                              alone + 3.0 * (conditional - alone), atol=1e-5)
        assert not torch.allclose(conditional, alone, atol=1e-4)  # the question matters, so the test has teeth


# ---------------------------------------------------------------------------------- a reasoner from the decoder
def test_reasoner_from_the_decoder_reproduces_it(tokenizer):
    backbone = micro_lm(tokenizer, seed=3).eval()
    torch.manual_seed(0)
    reasoner = BlockDiffusionReasoner(copy.deepcopy(backbone), tokenizer, *LATENT).eval()
    text = torch.tensor([[tokenizer.bos_token_id, *ids(tokenizer, "Use 12 7 3 to make 57.\n12+7=19.")]])
    with torch.no_grad():
        seq = LatentSequence(reasoner, 1, cache=False)
        seq.append(seq.token_chunk(text, role=QUESTION))
        ours = reasoner.lm_logits(seq.forward())
        assert torch.allclose(ours, backbone(input_ids=text).logits, atol=1e-5)

    # read_latents_like: with the same statistics in every slot, latent_in(z) is the decoder's prefix of mu.
    to_prefix = torch.nn.Linear(LATENT[1], 32)
    mean = torch.tensor([0.5, -1.0, 2.0]).expand(LATENT[0], -1)
    std = torch.tensor([0.1, 3.0, 1.5]).expand(LATENT[0], -1)
    reasoner.read_latents_like(to_prefix, mean, std)
    z = torch.randn(4, *LATENT)
    with torch.no_grad():
        assert torch.allclose(reasoner.latent_in(z), to_prefix(z * std + mean), atol=1e-5)


# ---------------------------------------------------------------------------------- diversity force
def test_diversity_force_is_the_paper_sum_divided_by_n_minus_1():
    for n in (2, 3, 7):
        torch.manual_seed(n)
        z = torch.randn(n, 2, 3)
        flat = z.reshape(n, -1)
        distances = torch.cdist(flat, flat)
        sigma = distances[torch.triu_indices(n, n, 1).unbind()].median()
        raw = torch.zeros_like(flat)
        for i in range(n):
            for j in range(n):
                if i != j:
                    r = distances[i, j] ** 2 / sigma**2
                    raw[i] += 2 * (1 - r) * torch.exp(-r) * (flat[i] - flat[j])
        assert torch.allclose(diversity_force(z).reshape(n, -1), raw / (n - 1), atol=1e-5), n


# ---------------------------------------------------------------------------------- `ladir-bench probe` end to end
LADIR_OPTIONS = LADIR_MICRO_OPTIONS  # the session's `ladir_micro` run's


def _cli_in_process(args: list[str]) -> tuple[int, str, str]:
    """`ladir-bench ARGS` in this process: (exit code, stdout, stderr)."""
    result = run_cli(args, check=False)
    return result.returncode, result.stdout, result.stderr


def _exits_2_with_one_line(result: tuple[int, str, str], needle: str) -> None:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], (code, err)


def test_probe_cli_on_a_micro_run(runs_dir: Path, ladir_micro: Path, monkeypatch):
    monkeypatch.setenv("LADIR_RUNS", str(runs_dir))
    train = ["train", "--method", "ladir", "--task", "countdown3", "--steps", "4"]
    copy_run(ladir_micro, "ladir", runs_dir, "cd")  # as `[*train, "--run", "cd", *micro_args(LADIR_OPTIONS)]` trains it

    result = run_cli(["probe", "--run", "cd", "--limit", "6", "--json"], runs_dir)
    (line,) = result.stdout.strip().splitlines()  # one JSON object, nothing else on stdout
    record = json.loads(line)
    accuracies = ["answer_acc_oracle", "answer_acc_shuffled", "answer_acc_noise", "pass1_generated", "pass1_swapped"]
    assert set(accuracies) | {"block_valid", "latent_shift", "checkpoint"} <= record.keys()
    assert all(0.0 <= record[key] <= 1.0 for key in [*accuracies, "block_valid"])
    assert set(record["latent_shift"]) == {"1-5", "5-10", "10-30"}
    assert all(value >= 0 for value in record["latent_shift"].values())
    # where generation breaks: the decoder's tolerance of noise around the oracle latents, and the
    # reasoner's reach from oracle latents noised to t0
    assert set(record["decoder_tolerance"]) == {"0.0", "0.25", "0.5", "1.0"}
    assert set(record["denoise_reach"]) == {"0.25", "0.5", "0.75", "1.0"}
    assert set(record["first_block_valid"]) == {"1", "5", "10", "30"}  # from pure noise, by Euler steps
    assert record["first_block_valid"]["10"] == record["denoise_reach"]["1.0"]  # the same draw, the same steps
    assert 0.0 <= record["swapped_code_valid"] <= 1.0  # another problem's code, read in this one's context
    assert all(0.0 <= v <= 1.0 for key in ("decoder_tolerance", "denoise_reach", "first_block_valid")
               for v in record[key].values())
    assert record["checkpoint"] == {"phase": "stage2", "step": 2} and record["n_problems"] == 6
    assert json.loads((runs_dir / "cd" / "probe" / "stage2-step2.json").read_text()) == record

    code, out, _ = _cli_in_process(["probe", "--run", "cd", "--limit", "6", "--json", "--checkpoint", "stage1"])
    stage1 = json.loads(out)
    assert code == 0 and stage1["checkpoint"] == {"phase": "stage1", "step": 2}
    assert json.loads((runs_dir / "cd" / "probe" / "stage1-step2.json").read_text()) == stage1

    # `table` recognises probe files by content and tabulates one row per checkpoint.
    probes = sorted(str(p) for p in (runs_dir / "cd" / "probe").glob("*.json"))
    code, out, _ = _cli_in_process(["table", *probes])
    assert code == 0 and "answer_acc_oracle" in out and "stage1@2" in out and "stage2@2" in out
    assert "tolerance 0.5" in out and "reach 1.0" in out and "first valid 30" in out

    # The bad-input contract: exit 2, one line on stderr, no traceback.
    bad_option = micro_args(LADIR_OPTIONS.replace("reasoner_init: decoder", "reasoner_init: foo"))
    _exits_2_with_one_line(_cli_in_process([*train, "--run", "bad", *bad_option]), "reasoner_init")
    assert not (runs_dir / "bad" / "config.yaml").exists()  # rejected before anything is written
    _exits_2_with_one_line(_cli_in_process([*train, "--run", "bad-stage", "--stage", "nope", *micro_args(LADIR_OPTIONS)]),
                           "no stage 'nope'")
    assert not (runs_dir / "bad-stage").exists()
    _exits_2_with_one_line(_cli_in_process(["probe", "--run", "nope"]), "no run named")
    ar_sft = ["train", "--method", "ar-sft", "--task", "countdown3", "--run", "ar", "--steps", "2", *micro_args()]
    assert _cli_in_process(ar_sft)[0] == 0
    # an AR run is probed on its reasoning text: the reference for LaDiR's figures
    code, out, _ = _cli_in_process(["probe", "--run", "ar", "--limit", "4", "--json"])
    ar = json.loads(out)
    assert code == 0 and ar["checkpoint"] == {"phase": "sft", "step": 2} and ar["steps"] is None
    assert all(0.0 <= ar[key] <= 1.0 for key in ["answer_acc_oracle", "answer_acc_shuffled", "pass1_generated",
                                                  "pass1_swapped", "block_valid"])
    assert json.loads((runs_dir / "ar" / "probe" / "sft-step2.json").read_text()) == ar
    _exits_2_with_one_line(_cli_in_process(["probe", "--run", "ar", "--checkpoint", "stage1"]),
                           "no checkpoint 'stage1'")
    _exits_2_with_one_line(_cli_in_process(["probe", "--run", "ar", "--knob", "cfg_scale=2"]),
                           "--knob")
