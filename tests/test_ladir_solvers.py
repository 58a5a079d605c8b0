"""LaDiR's ODE solvers (ladir.sampler.SOLVERS): order of accuracy on velocity fields with a known
solution, velocity evaluations counted, guidance integrated the same way by every solver, and the
sampling path (KV-cached, seeded) with each of them."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.errors import BadInput
from harness.methods import get_method_class
from harness.sampling import RowNoise
from ladir import pipeline
from ladir.pipeline import decode_answer, generate_blocks, start_sequence
from ladir.sampler import SOLVERS, FlowMatchEuler, FlowMatchSolver, grouped_diversity_force
from tests.conftest import MICRO_SETTINGS

SECOND_ORDER = [name for name, solver in SOLVERS.items() if solver.order == 2]


def integrate(solver: FlowMatchSolver, velocity, z1: torch.Tensor, nfe: int) -> torch.Tensor:
    solver.set_timesteps(nfe)
    z = z1.clone()
    for t in solver.timesteps:
        z = solver.step(velocity(z, t), t, z)
    return z


def observed_orders(name: str, velocity, z1: torch.Tensor, exact: torch.Tensor, nfes=(32, 64, 128)) -> list[float]:
    """log2 of the error ratio each time the step is halved."""
    errors = [(integrate(SOLVERS[name](), velocity, z1, n) - exact).abs().max().item() for n in nfes]
    return [math.log2(a / b) for a, b in itertools.pairwise(errors)]


def linear_field(a: float):
    """dz/dt = a z, integrated from t = 1 to 0: z_0 = z_1 exp(-a)."""
    return (lambda z, t: a * z), (lambda z1: z1 * math.exp(-a))


def gaussian_flow(mean: float, std: float):
    """The flow-matching velocity of data N(mean, std^2 I) on z_t = (1-t) x + t eps (what the reasoner
    learns, exactly): z_t ~ N((1-t) mean, v_t I), v_t = (1-t)^2 std^2 + t^2, so the ODE carries z_1 to
    z_t = (1-t) mean + sqrt(v_t) z_1 and u = dz/dt = -mean + (t - (1-t) std^2) / v_t (z - (1-t) mean)."""
    def velocity(z, t):
        v_t = (1 - t) ** 2 * std**2 + t**2
        return -mean + (t - (1 - t) * std**2) / v_t * (z - (1 - t) * mean)

    return velocity, (lambda z1: mean + std * z1)


@pytest.fixture
def z1():
    return torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_error_ratio_when_halving_the_step_gives_the_order(name, z1):
    velocity, exact = linear_field(1.3)
    orders = observed_orders(name, velocity, z1, exact(z1))
    # error ratio ~2 (order 1) for Euler, ~4 (order 2) for the others
    assert all(abs(order - SOLVERS[name].order) < 0.2 for order in orders), orders


@pytest.mark.parametrize("name", list(SOLVERS))
def test_order_on_the_flow_of_a_gaussian(name, z1):
    velocity, exact = gaussian_flow(1.5, 0.5)
    orders = observed_orders(name, velocity, z1, exact(z1))
    if SOLVERS[name].order == 1:
        assert all(abs(order - 1) < 0.2 for order in orders), orders
    else:  # at least 2 (midpoint's leading error term vanishes on this field: it converges at order 3)
        assert all(order > 1.8 for order in orders), orders
        euler = integrate(FlowMatchEuler(), velocity, z1, 8)
        assert (integrate(SOLVERS[name](), velocity, z1, 8) - exact(z1)).abs().max() < \
            0.25 * (euler - exact(z1)).abs().max()  # at equal NFE, far closer than Euler


def test_a_straight_flow_is_integrated_exactly_by_every_solver():
    # a single data point: u = eps - x is constant along each path, so one evaluation is exact
    z1 = torch.randn(4, 3, dtype=torch.float64)
    x = torch.full_like(z1, 0.7)
    for solver in SOLVERS.values():
        nfe = solver.evaluations_per_step
        out = integrate(solver(), lambda z, t: (z - x) / t if t > 0 else z1 - x, z1, nfe)
        assert torch.allclose(out, x, atol=1e-12), solver.name


@pytest.mark.parametrize("name", list(SOLVERS))
def test_nfe_is_the_number_of_velocity_evaluations(name):
    solver = SOLVERS[name]()
    per_step = solver.evaluations_per_step
    solver.set_timesteps(6)
    assert solver.nfe == len(solver.timesteps) == 6
    assert solver.grid == pytest.approx([1 - k / (6 // per_step) for k in range(6 // per_step + 1)])
    assert all(0 <= t <= 1 for t in solver.timesteps) and solver.timesteps[0] == 1.0
    if per_step > 1:
        with pytest.raises(ValueError, match="per step"):
            solver.set_timesteps(5)
    with pytest.raises(ValueError, match="out of order"):
        solver.step(torch.zeros(1), 0.5, torch.zeros(1))


@pytest.mark.parametrize("name", list(SOLVERS))
def test_guidance_is_the_same_guided_velocity_at_every_evaluation(name):
    # a guided solver equals an unguided one fed u - gamma_max t F(z) at each evaluation
    gamma_max, groups = 0.8, torch.tensor([0, 0, 0, 1, 1, 1])
    z1 = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1))
    velocity, _ = gaussian_flow(0.5, 0.7)
    solver = SOLVERS[name](gamma_max=gamma_max)
    solver.set_timesteps(4)
    reference = SOLVERS[name]()
    reference.set_timesteps(4)
    z, z_ref = z1.clone(), z1.clone()
    for t in solver.timesteps:
        z = solver.step(velocity(z, t), t, z, groups)
        z_ref = reference.step(velocity(z_ref, t) - gamma_max * t * grouped_diversity_force(z_ref, groups), t, z_ref)
    assert torch.allclose(z, z_ref, atol=1e-6)
    unguided = integrate(SOLVERS[name](), velocity, z1, 4)
    assert not torch.allclose(z, unguided, atol=1e-3)


# ---------------------------------------------------------------------------------- LaDiR with each solver
@pytest.fixture(scope="module")
def method(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("solvers")
    overrides = ["method=ladir", *MICRO_SETTINGS,
                 "method_options={latent_tokens: 2, latent_dim: 4, max_sentence_tokens: 6, decoder_context: reasoning}"]
    config = load_config("tiny", None, [parse_override(o) for o in overrides])
    instance = get_method_class("ladir")(RunContext(config, tmp / "r", tmp))
    instance.load_untrained()
    return instance


@pytest.mark.parametrize("name", list(SOLVERS))
def test_cached_sampling_reuses_the_prefix_across_every_evaluation(method, name, monkeypatch):
    question = [method._question_ids(method.ctx.task.problems("test")[0])] * 4
    evaluations, widths = [], []
    velocity = pipeline.velocity

    def counted(seq, z, t, *args, **kwargs):
        evaluations.append(t)
        return velocity(seq, z, t, *args, **kwargs)

    transformer = method.reasoner.transformer

    def spy(embeds, *args, **kwargs):
        widths.append(embeds.size(1))
        return transformer(embeds, *args, **kwargs)

    monkeypatch.setattr(pipeline, "velocity", counted)
    results = []
    for cache in (True, False):
        torch.manual_seed(3)
        seq = start_sequence(method.reasoner, question, cache=cache)
        if cache:
            monkeypatch.setattr(method.reasoner, "transformer", spy)
        solver = SOLVERS[name](init_noise=1.5, gamma_max=0.5)
        results.append(generate_blocks(seq, solver, steps=4, max_blocks=2)[0])
        monkeypatch.setattr(method.reasoner, "transformer", transformer)
    assert torch.allclose(results[0], results[1], atol=1e-5)  # the cache changes nothing
    blocks = results[0].size(1)
    assert len(evaluations) == 2 * 4 * blocks  # 4 velocity evaluations per block, cached and uncached
    # cached: each evaluation and each commit runs only the block's L_b + 3 columns
    assert set(widths) == {method.reasoner.block_width} and len(widths) == 4 * blocks + blocks


@pytest.mark.parametrize("name", list(SOLVERS))
def test_ladir_samples_with_each_solver_and_the_same_seed_gives_the_same_samples(method, name):
    problems = method.ctx.task.problems("test")[:2]
    knobs = {"solver": name, "steps": 2, "max_blocks": 2, "max_answer_tokens": 6, "batch_size": 3, "gamma_max": 0.3}
    first = method.sample(problems, 3, **knobs)
    assert [len(s) for s in first] == [3, 3] and all(isinstance(c, str) for s in first for c in s)
    assert method.sample(problems, 3, **knobs) == first
    trace = method.trace(problems[0], steps=4, seed=0, max_blocks=1, solver=name)
    blocks = [r for r in trace if r["block"] is not None]
    assert len({(r["block"], r["t"]) for r in blocks}) == len(blocks) and {1.0, 0.0} <= {r["t"] for r in blocks}


def test_solver_knobs_are_checked(method):
    assert method.sample_knobs({"solver": "heun", "steps": 4}).sampler().evaluations_per_step == 2
    with pytest.raises(BadInput, match="solver 'rk45'"):
        method.sample_knobs({"solver": "rk45"})
    with pytest.raises(BadInput, match="steps=5.*heun"):
        method.sample_knobs({"solver": "heun", "steps": 5})


# ---------------------------------------------------------------------------------- the rest of a sample's cost
def test_finished_answers_leave_the_batch_without_changing_any_row(method, monkeypatch):
    reasoner = method.reasoner
    lm_logits = reasoner.lm_logits
    eos_bias = torch.zeros(len(method.ctx.tokenizer))
    eos_bias[reasoner.eos_id] = 2.5  # answers of many lengths, so rows finish at different steps
    monkeypatch.setattr(reasoner, "lm_logits", lambda hidden: lm_logits(hidden) + eos_bias)
    question = method._question_ids(method.ctx.task.problems("test")[0])
    seq = start_sequence(reasoner, [question] * 8)
    selected = []
    select = seq.select
    monkeypatch.setattr(seq, "select", lambda rows: selected.append(len(rows)) or select(rows))
    together = decode_answer(seq, 12, 1.0, RowNoise(range(8)))
    assert selected and selected[-1] < 8  # finished rows were dropped
    alone = [decode_answer(start_sequence(reasoner, [question]), 12, 1.0, RowNoise([i]))[0] for i in range(8)]
    assert together == alone and len({len(a) for a in together}) > 2


def test_write_reasoning_off_keeps_the_answer_and_skips_the_vae(method, monkeypatch):
    problems = method.ctx.task.problems("test")[:2]
    knobs = {"steps": 2, "max_blocks": 2, "max_answer_tokens": 6, "solver": "ab2"}
    full = method.sample(problems, 2, **knobs)
    monkeypatch.setattr(method, "decode_reasoning", lambda *a: pytest.fail("the blocks were decoded"))
    short = method.sample(problems, 2, **knobs, write_reasoning=False)
    assert all(f.endswith(s) for fs, ss in zip(full, short, strict=True) for f, s in zip(fs, ss, strict=True))
    assert sum(len(c) for cs in short for c in cs) < sum(len(c) for cs in full for c in cs)
