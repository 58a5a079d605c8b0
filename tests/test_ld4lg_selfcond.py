"""LD4LG as its paper samples it: the self-conditioning input (absent = zero at the first step, used
with probability p in training), the frozen encoder, and the autoencoder's reconstruction ceiling
stored in the run and reported beside the evaluation."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from baselines.ld4lg import (
    LD4LG,
    SelfConditionedDenoiser,
    ceiling_path,
    ceiling_summary,
    reconstruct,
    sample_latent,
    self_conditioned_fm_loss,
)
from harness.backbone import build_char_tokenizer
from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.errors import BadInput
from ladir.pipeline import start_sequence
from ladir.sampler import FlowMatchEuler
from tests.conftest import MICRO_SETTINGS, micro_args, micro_lm, run_cli

QUESTIONS = ["Use 12 7 3 to make 57.\n", "Use 2 7 to make 9.\n"]
L, D = 3, 4


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer([*QUESTIONS, "0123456789+-*/=().TheanswrisUk "])


def denoiser(tokenizer, self_condition: bool = True) -> SelfConditionedDenoiser:
    torch.manual_seed(0)
    backbone = micro_lm(tokenizer)
    return SelfConditionedDenoiser(backbone, tokenizer, L, D, self_condition).eval()


def question_ids(tokenizer) -> list[list[int]]:
    return [[tokenizer.bos_token_id, *tokenizer.encode(q, add_special_tokens=False)] for q in QUESTIONS]


# ---------------------------------------------------------------------------------- the input
def test_the_estimate_changes_the_prediction_and_zero_is_absent(tokenizer):
    model = denoiser(tokenizer)
    seq = start_sequence(model, question_ids(tokenizer))
    z_t, estimate = torch.randn(2, L, D), torch.randn(2, L, D)
    with torch.no_grad():
        absent = model.predict(seq, z_t, 0.7)
        zero = model.predict(seq, z_t, 0.7, torch.zeros(2, L, D))
        given = model.predict(seq, z_t, 0.7, estimate)
    assert torch.equal(absent, zero)
    assert (given - absent).abs().amax() > 1e-3
    # only the latent columns carry it: <BOT>, the timestep token and <EOT> are untouched
    plain, conditioned = model.noisy_block(seq, z_t, 0.7, None), model.noisy_block(seq, z_t, 0.7, estimate)
    changed = (conditioned.embeds - plain.embeds).abs().sum((0, 2)) > 0
    assert changed.tolist() == [False, False, True, True, True, False]

    without = denoiser(tokenizer, self_condition=False)
    assert without.self_cond_in is None
    assert "self_cond_in.weight" not in without.state_dict()  # its checkpoints are plain reasoner ones
    seq = start_sequence(without, question_ids(tokenizer))
    with torch.no_grad():
        assert torch.equal(without.predict(seq, z_t, 0.7, estimate), without.predict(seq, z_t, 0.7))


def test_sampling_conditions_each_step_on_the_previous_estimate(tokenizer):
    model = denoiser(tokenizer)
    seen, predict = [], model.predict

    def recording(seq, z_t, t, x0_estimate=None):
        u = predict(seq, z_t, t, x0_estimate)
        seen.append((t, z_t.clone(), None if x0_estimate is None else x0_estimate.clone(), u))
        return u

    model.predict = recording
    seq = start_sequence(model, question_ids(tokenizer))
    z = sample_latent(model, seq, FlowMatchEuler(), 4, torch.randn(2, L, D))
    assert [round(t, 2) for t, *_ in seen] == [1.0, 0.75, 0.5, 0.25]
    assert seen[0][2] is None  # nothing to condition on at the first step
    for (t, z_t, _, u), (_, _, estimate, _) in itertools.pairwise(seen):
        assert torch.allclose(estimate, z_t - t * u)  # x0_hat = z_t - t u of the step before
    last_t, last_z, _, last_u = seen[-1]
    assert torch.allclose(z, last_z - last_t * last_u)  # the last Euler step lands on the last estimate

    model.predict = predict
    plain = denoiser(tokenizer, self_condition=False)
    calls = []
    plain_predict = plain.predict
    plain.predict = lambda seq, z_t, t, x0_estimate=None: calls.append(x0_estimate) or plain_predict(seq, z_t, t)
    sample_latent(plain, start_sequence(plain, question_ids(tokenizer)), FlowMatchEuler(), 3, torch.randn(2, L, D))
    assert calls == [None, None, None]


# ---------------------------------------------------------------------------------- training
def test_training_conditions_with_probability_p_seeded(tokenizer):
    model = denoiser(tokenizer).train()
    z0 = torch.randn(2, L, D)
    passes = []
    predict = model.predict

    def recording(seq, z_t, t, x0_estimate=None):
        passes.append((torch.is_grad_enabled(), x0_estimate is not None))
        return predict(seq, z_t, t, x0_estimate)

    model.predict = recording

    def decisions(p: float, steps: int = 200) -> list[bool]:
        used = []
        for step in range(steps):
            torch.manual_seed(step)  # the trainer reseeds every step
            passes.clear()
            _, logs = self_conditioned_fm_loss(model, question_ids(tokenizer), z0, p)
            used.append(bool(logs["self_cond"]))
            # conditioned: a first pass without gradient and without estimate, then the trained pass on it
            assert passes == ([(False, False), (True, True)] if used[-1] else [(True, False)])
        return used

    half = decisions(0.5)
    assert 0.4 < sum(half) / len(half) < 0.6
    assert decisions(0.5) == half  # seeded: the same steps condition again
    assert not any(decisions(0.0, 20)) and all(decisions(1.0, 20))

    # the trained pass's gradient reaches the self-conditioning map only when it was used
    model.predict = predict
    for p, reaches in ((1.0, True), (0.0, False)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss, _ = self_conditioned_fm_loss(model, question_ids(tokenizer), z0, p)
        loss.backward()
        grad = model.self_cond_in.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches
    # without self-conditioning p is moot: the loss is the self-conditioned model's at p = 0 (same weights otherwise)
    plain = denoiser(tokenizer, self_condition=False).train()
    torch.manual_seed(3)
    reference, _ = self_conditioned_fm_loss(model, question_ids(tokenizer), z0, 0.0)
    torch.manual_seed(3)
    loss, logs = self_conditioned_fm_loss(plain, question_ids(tokenizer), z0, 1.0)
    assert logs == {"self_cond": 0.0} and torch.equal(loss, reference)


# ---------------------------------------------------------------------------------- the method
def ld4lg(tmp_path, **options) -> LD4LG:
    setting = "method_options={" + ", ".join(f"{k}: {v}" for k, v in
                                             {"latent_tokens": L, "latent_dim": D, **options}.items()) + "}"
    overrides = ["method=ld4lg", *MICRO_SETTINGS, setting]
    config = load_config("tiny", None, [parse_override(o) for o in overrides])
    return LD4LG(RunContext(config, tmp_path / "r", tmp_path))


def test_a_frozen_encoder_gets_no_gradient(tmp_path):
    for choice in ("frozen", "trainable"):
        method = ld4lg(tmp_path, vae_encoder=choice)
        fresh = method.ctx.backbone.fresh_model
        vae = method._vae(fresh(), fresh())
        problems = method.ctx.task.problems("train")[:2]
        torch.manual_seed(0)
        loss, _ = vae.loss(method.text_pairs(problems))
        loss.backward()
        encoder_grads = [p.grad for p in vae.encoder.parameters()]
        if choice == "frozen":
            assert all(g is None for g in encoder_grads)
            assert not any(p.requires_grad for p in vae.encoder.parameters())
        else:
            assert any(g is not None and g.abs().sum() > 0 for g in encoder_grads)
        # the compression into latents learns either way: its gradient passes through the encoder's activations
        assert vae.latent_queries.grad.abs().sum() > 0 and vae.to_mu.weight.grad.abs().sum() > 0
    for bad in ({"vae_encoder": "half"}, {"self_condition_prob": 1.5}):
        with pytest.raises(BadInput):
            ld4lg(tmp_path, **bad)


class HandMadeAutoencoder:
    """Encodes a problem to its index and decodes index i to the i-th given text."""

    latent_tokens, latent_dim, device = 1, 1, torch.device("cpu")

    def __init__(self, references: list[str], decoded: list[str]):
        self.index = {text: i for i, text in enumerate(references)}
        self.decoded = decoded
        self.calls = 0

    def encode(self, pairs):
        mu = torch.tensor([[[float(self.index[text])]] for _, text in pairs])
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        self.calls += 1
        return [self.decoded[int(v)] for v in z.flatten().tolist()]


def test_the_ceiling_on_a_hand_made_case(tmp_path):
    method = ld4lg(tmp_path)
    task = method.ctx.task
    problems = task.problems("test")[:4]
    references = [p["reference"] for p in problems]
    _, answer = task.split_target(references[1])
    decoded = [references[0],  # exact
               answer,  # not exact (the reasoning is gone) but the checker passes it
               references[2].replace("The answer is", "The answer is 1+"),  # neither
               references[3]]  # exact
    assert task.check(problems[1], answer).passed and not task.check(problems[2], decoded[2]).passed
    method.vae = HandMadeAutoencoder(references, decoded)

    records = reconstruct(method.vae, task, problems)
    assert [records[p["task_id"]]["exact"] for p in problems] == [True, False, False, True]
    assert [records[p["task_id"]]["passed"] for p in problems] == [True, True, False, True]
    assert ceiling_summary(records) == {"exact_match": 0.5, "passed": 0.75, "n_problems": 4}
    assert ceiling_summary(records, [problems[0]["task_id"], problems[2]["task_id"]])["exact_match"] == 0.5

    # stored in the run once; an evaluation of the first three reads it back and reports those three
    assert method.reconstruction_ceiling(task, "test", problems) == {"exact_match": 0.5, "passed": 0.75, "n_problems": 4}
    stored = json.loads(ceiling_path(method.ctx.run_dir, "test").read_text())
    assert stored["exact_match"] == 0.5 and len(stored["problems"]) == 4 and len(stored["mismatches"]) == 2
    calls = method.vae.calls
    beside = method.metrics_beside(task, "test", problems[:3])
    assert beside == {"reconstruction_ceiling": pytest.approx(1 / 3), "reconstruction_ceiling_pass": pytest.approx(2 / 3)}
    assert method.vae.calls == calls  # nothing decoded again


def test_ceiling_is_stored_after_the_autoencoder_and_shown_by_the_table(runs_dir):
    options = ["method_options.vae_steps=4", f"method_options.latent_tokens={L}", f"method_options.latent_dim={D}",
               "method_options.stats_problems=50", "method_options.report_problems=5",
               "method_options.max_text_tokens=64", "method_options.vae_encoder=frozen"]
    run_cli(["train", "--method", "ld4lg", "--task", "countdown3", "--run", "sc", "--steps", "4",
             *micro_args(*options)], runs_dir)
    stored = json.loads(ceiling_path(runs_dir / "sc", "test").read_text())
    assert stored["split"] == "test" and stored["n_problems"] == 20  # every test problem, after the autoencoder
    log = [json.loads(line) for line in (runs_dir / "sc" / "diffusion" / "log.jsonl").read_text().splitlines()]
    assert {r["self_cond"] for r in log} <= {0.0, 1.0}

    metrics = json.loads(run_cli(["eval", "--run", "sc", "--k", "2", "--limit", "3", "--steps", "2", "--json"],
                                 runs_dir).stdout)
    first = [f"countdown3/test/{i}" for i in range(3)]
    assert set(first) <= set(stored["problems"])
    expected = ceiling_summary(stored["problems"], first)
    assert metrics["reconstruction_ceiling"] == expected["exact_match"]
    assert metrics["reconstruction_ceiling_pass"] == expected["passed"]
    table = run_cli(["table", str(runs_dir / "sc"), "--format", "csv"], runs_dir).stdout
    assert "reconstruction_ceiling" in table.splitlines()[0]
