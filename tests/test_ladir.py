"""LaDiR: the block attention mask, flow matching, stage-2 gradients, the KV-cached sampler, diversity
guidance, the VAE, and a tiny end-to-end train / resume / sample through the shared protocol."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.lm import encode_pairs, next_token_loss
from harness.methods import get_method_class
from harness.train.checkpoint import checkpoints
from ladir.method import LaDiR, SentenceReencoder, rollout_answer_loss
from ladir.pipeline import decode_answer, generate_blocks, start_sequence
from ladir.reasoner import (
    LatentSequence,
    ReasoningBatch,
    block_attention_mask,
    flow_matching_pair,
    teacher_forcing_losses,
    teacher_forcing_sequence,
)
from ladir.sampler import FlowMatchEuler, diversity_force
from ladir.vae import SentenceVAE, encode_means
from tests.conftest import MICRO_SETTINGS, ids, micro_lm

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# ---------------------------------------------------------------------------------- attention mask
def _allowed(mask):
    return ["".join("1" if v == 0 else "." for v in row) for row in mask[0].tolist()]


def test_inference_mask_is_causal_between_blocks_and_bidirectional_inside(reasoner):
    # question 2 tokens | block 1 (BOT t z z EOT) | block 2 | answer 2 tokens
    seq = LatentSequence(reasoner, 1, cache=False)
    seq.append(seq.token_chunk(torch.tensor([[5, 6]])))
    for _ in range(2):
        seq.append(seq.block_chunk(torch.zeros(1, 2, 3), 0.0))
    seq.append(seq.token_chunk(torch.tensor([[7, 8]])))
    meta = seq.metadata()
    expected = [
        # QQ BBBBB BBBBB AA
        "1.............",
        "11............",
        "1111111.......",
        "1111111.......",
        "1111111.......",
        "1111111.......",
        "1111111.......",
        "111111111111..",
        "111111111111..",
        "111111111111..",
        "111111111111..",
        "111111111111..",
        "1111111111111.",
        "11111111111111",
    ]
    assert _allowed(block_attention_mask(meta, meta)[0]) == expected
    assert meta["position"][0].tolist() == list(range(14))


def test_teacher_forcing_mask_with_noisy_copies_and_padding(reasoner, tokenizer):
    # row 0: question of 2 tokens, 2 blocks; row 1: question of 1 token (left pad), 1 block (slot 2 is padding).
    # Both answers 1 token + </s>, so the answer chunk is <SOA> a </s> (3 columns).
    batch = ReasoningBatch(question_ids=[[1, 20], [21]], answer_ids=[[22, 2], [23, 2]],
                           blocks=[torch.zeros(2, 2, 3), torch.zeros(1, 2, 3)])
    meta = teacher_forcing_sequence(reasoner, batch).seq.metadata()
    mask = block_attention_mask(meta, meta)
    row0 = [
        # QQ B1--- B2--- AAA N1--- N2---
        "1........................",
        "11.......................",
        "1111111..................",  # clean block 1: question + itself
        "1111111..................",
        "1111111..................",
        "1111111..................",
        "1111111..................",
        "111111111111.............",  # clean block 2: + block 1
        "111111111111.............",
        "111111111111.............",
        "111111111111.............",
        "111111111111.............",
        "1111111111111............",  # <SOA>
        "11111111111111...........",
        "111111111111111..........",
        "11.............11111.....",  # noisy block 1: question + itself
        "11.............11111.....",
        "11.............11111.....",
        "11.............11111.....",
        "11.............11111.....",
        "1111111.............11111",  # noisy block 2: question, clean block 1, itself
        "1111111.............11111",
        "1111111.............11111",
        "1111111.............11111",
        "1111111.............11111",
    ]
    row1 = [
        # pQ B1--- pppp AAA N1--- ppppp
        "1........................",  # left padding sees only itself
        ".1.......................",
        ".111111..................",
        ".111111..................",
        ".111111..................",
        ".111111..................",
        ".111111..................",
        ".......1.................",  # block-2 slot: padding
        "........1................",
        ".........1...............",
        "..........1..............",
        "...........1.............",
        ".111111.....1............",  # <SOA> right after block 1
        ".111111.....11...........",
        ".111111.....111..........",
        ".1.............11111.....",  # noisy block 1
        ".1.............11111.....",
        ".1.............11111.....",
        ".1.............11111.....",
        ".1.............11111.....",
        "....................1....",  # noisy slot 2: padding
        ".....................1...",
        "......................1..",
        ".......................1.",
        "........................1",
    ]
    assert _allowed(mask[0]) == row0
    assert _allowed(mask[1]) == row1
    # noisy copies sit at their clean block's positions; row 1's answer continues right after its block
    assert meta["position"][0, 15:20].tolist() == meta["position"][0, 2:7].tolist() == [2, 3, 4, 5, 6]
    assert meta["position"][1, 12:15].tolist() == [6, 7, 8]


# ---------------------------------------------------------------------------------- flow matching
def test_flow_matching_target_and_loss(reasoner, tokenizer):
    z_t, target = flow_matching_pair(torch.tensor([[1.0, 2.0]]), torch.tensor([0.25]), torch.tensor([[3.0, 5.0]]))
    assert torch.allclose(z_t, torch.tensor([[1.5, 2.75]])) and torch.allclose(target, torch.tensor([[2.0, 3.0]]))

    # With a zero velocity head, L_FM = mean ||eps - z_0||^2 over the real blocks only.
    torch.nn.init.zeros_(reasoner.velocity_head.weight)
    torch.nn.init.zeros_(reasoner.velocity_head.bias)
    blocks = [torch.randn(2, 2, 3), torch.randn(1, 2, 3)]
    batch = ReasoningBatch([[1, 20], [21]], [[22, 2], [23, 2]], blocks)
    torch.manual_seed(3)
    losses = teacher_forcing_losses(reasoner, batch)
    torch.manual_seed(3)
    torch.rand(2, 2)  # the per-block times, drawn first
    noise = torch.randn(2, 2, 2, 3)
    expected = torch.stack([((noise[0, 0] - blocks[0][0]) ** 2).mean(), ((noise[0, 1] - blocks[0][1]) ** 2).mean(),
                            ((noise[1, 0] - blocks[1][0]) ** 2).mean()]).mean()
    assert torch.allclose(losses["fm"], expected, atol=1e-6)
    assert set(losses) == {"fm", "spec", "ans"} and all(torch.isfinite(v) for v in losses.values())

    # a problem without reasoning sentences: question, then <SOA> directly
    empty = ReasoningBatch([[1, 20], [21]], [[22, 2], [23, 2]], [torch.zeros(0, 2, 3), torch.randn(1, 2, 3)])
    assert all(torch.isfinite(v) for v in teacher_forcing_losses(reasoner, empty).values())


# ---------------------------------------------------------------------------------- stage 2
def test_answer_loss_reaches_the_velocity_head_through_the_rollout(reasoner):
    batch = ReasoningBatch([[1, 20, 21], [1, 22]], [[23, 24, 2], [25, 2]], [torch.randn(2, 2, 3), torch.randn(1, 2, 3)])
    loss, _ = rollout_answer_loss(reasoner, batch, euler_steps=3)
    loss.backward()
    grad = reasoner.velocity_head.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert reasoner.latent_in.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- sampling
def test_cached_and_uncached_sampling_agree(reasoner, tokenizer):
    question = [[tokenizer.bos_token_id, *ids(tokenizer, "Use 12 7 3 to make 57.\n")]]
    results = []
    for cache in (True, False):
        torch.manual_seed(11)
        seq = start_sequence(reasoner, question * 4, cache=cache)
        z, present = generate_blocks(seq, FlowMatchEuler(init_noise=2.0, gamma_max=0.5), steps=4, max_blocks=3)
        results.append((z, present, decode_answer(seq, max_tokens=8, temperature=1.0)))
    (z_c, p_c, a_c), (z_u, p_u, a_u) = results
    assert torch.allclose(z_c, z_u, atol=1e-5)
    assert torch.equal(p_c, p_u) and a_c == a_u


def test_diversity_force_matches_the_formula_and_spreads_trajectories():
    torch.manual_seed(0)
    z = torch.randn(6, 2, 3)
    flat = z.reshape(6, -1)
    distances = torch.cdist(flat, flat)
    sigma = distances[torch.triu_indices(6, 6, 1).unbind()].median()
    expected = torch.zeros_like(flat)
    for i in range(6):
        for j in range(6):
            if i != j:
                r = distances[i, j] ** 2 / sigma**2
                expected[i] += 2 * (1 - r) * torch.exp(-r) * (flat[i] - flat[j]) / 5  # normalised by n - 1
    assert torch.allclose(diversity_force(z).reshape(6, -1), expected, atol=1e-5)
    assert torch.allclose(diversity_force(z, paper_sum=True).reshape(6, -1), 5 * expected, atol=1e-5)  # the paper's sum
    assert diversity_force(z[:1]).abs().sum() == 0

    # F is the gradient of sum_j d_ij^2 exp(-d_ij^2 / sigma^2): it drives pairwise distances toward sigma,
    # separating the closest trajectories. Under a gently contracting velocity field, guided
    # trajectories end with their nearest neighbours further away than unguided ones.
    c = torch.ones(2, 3)

    def nearest_neighbour_distance(gamma_max, seed):
        torch.manual_seed(seed)
        sampler = FlowMatchEuler(gamma_max=gamma_max)
        sampler.set_timesteps(10)
        sample = sampler.initial_noise((8, 2, 3))
        for t in sampler.timesteps:
            sample = sampler.step(0.5 * (sample - c), t, sample)
        return torch.pdist(sample.reshape(8, -1)).min()

    for seed in range(3):
        assert nearest_neighbour_distance(3.5, seed) > 1.1 * nearest_neighbour_distance(0.0, seed)  # 0.5 x (n - 1)


@CUDA
def test_cached_and_uncached_sampling_agree_on_cuda(reasoner, tokenizer):
    reasoner = reasoner.cuda()
    question = [[tokenizer.bos_token_id, *ids(tokenizer, "Use 12 7 3 to make 57.\n")]]
    latents = []
    for cache in (True, False):
        torch.manual_seed(11)
        seq = start_sequence(reasoner, question * 4, cache=cache)
        latents.append(generate_blocks(seq, FlowMatchEuler(init_noise=2.0, gamma_max=0.5), steps=4, max_blocks=3)[0])
    assert latents[0].device.type == "cuda" and torch.allclose(latents[0], latents[1], atol=1e-4)


# ---------------------------------------------------------------------------------- VAE
@pytest.mark.parametrize("decoder_context", [False, True])
def test_a_few_vae_steps_lower_the_reconstruction_loss(tokenizer, decoder_context):
    # The decoder is a frozen *language model* in LaDiR; a random one barely reacts to its prefix, so
    # first fit a tiny base LM to the sentences (it knows the format, not which sentence is meant).
    torch.manual_seed(0)
    sentences = [f"{a}+{b}={a + b}." for a, b in [(12, 7), (45, 67), (3, 98), (51, 9), (26, 33), (80, 14)]]
    # contexts of different lengths: the context-conditioned decoder reads them left-padded
    pairs = [("Use 12 7 3 to make 57.\n" + " ".join(sentences[:i % 3]), s) for i, s in enumerate(sentences)]
    contexts = [c for c, _ in pairs]
    base = micro_lm(tokenizer)
    optimizer = torch.optim.Adam(base.parameters(), lr=1e-2)
    for _ in range(30):  # the text the decoder will see: the sentence after its context, or alone
        batch = encode_pairs(tokenizer, contexts if decoder_context else [""] * len(sentences), sentences, 64,
                             loss_on_prompt=True)
        loss = next_token_loss(base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae = SentenceVAE(copy.deepcopy(base), copy.deepcopy(base), tokenizer, latent_tokens=2, latent_dim=4,
                      latent_noise=0.5, token_replace_prob=0.1, decoder_context=decoder_context)

    def recon():
        with torch.no_grad():
            return float(vae.reconstruction_loss(vae.encode(pairs)[0], sentences, contexts))

    before = recon()
    optimizer = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(40):
        loss, logs = vae.loss(pairs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert {"recon", "kl"} <= set(logs)
    assert all(p.grad is None for p in vae.decoder.parameters())  # the decoder stays frozen
    assert recon() < 0.85 * before
    z = vae.encode(pairs)[0]
    decoded = vae.decode(z, contexts)
    assert len(decoded) == len(pairs)
    # padding to the longest context changes nothing: each latent decodes as it does alone
    assert decoded == [vae.decode(z[i : i + 1], contexts[i : i + 1])[0] for i in range(len(pairs))]
    if decoder_context:
        with pytest.raises(ValueError, match="context"):
            vae.decode(z)


def test_context_decoder_decodes_blocks_in_order_after_the_earlier_sentences(tmp_path):
    overrides = ["method=ladir", *MICRO_SETTINGS, "method_options={decoder_context: reasoning, max_sentence_tokens: 8}"]
    config = load_config("tiny", None, [parse_override(o) for o in overrides])
    method = get_method_class("ladir")(RunContext(config, tmp_path / "r", tmp_path))
    method.load_untrained()
    problems = method.ctx.task.problems("test")[:3]
    seen = []

    class Decoder:  # a stand-in for the decoder's cached contexts that names each call's inputs
        def __init__(self, questions, rows):
            seen.append(list(questions))

        def keep(self, rows):
            pass

        def decode(self, z, rows):
            seen.append(list(rows))
            return [f"s{len(seen) - 1}.{i}" for i in range(len(z))]

    method.vae.read_contexts = Decoder
    present = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    z = torch.zeros(3, 3, method.options.latent_tokens, method.options.latent_dim)
    reasoning = method.decode_reasoning(problems, z, present)
    assert reasoning == [["s1.0", "s2.0", "s3.0"], ["s1.1"], ["s1.2", "s2.1"]]
    prompts = [p["prompt"] for p in problems]
    # the questions read once, then each block of the rows still reasoning, in order (the sentences
    # joining each row's context: tests/test_ladir_decode_cache.py)
    assert seen == [prompts, [0, 1, 2], [0, 2], [0]]
    # and the oracle blocks are encoded with the same contexts the decoder is trained on
    pairs = method.sentence_pairs(problems[:1])
    sentences, _ = method.ctx.task.split_target(problems[0]["reference"])
    assert pairs == [(" ".join([prompts[0], *sentences[:i]]), s) for i, s in enumerate(sentences)]


@pytest.mark.parametrize("decoder_context", ["none", "reasoning"])
def test_reencode_commits_the_vae_code_of_each_decoded_sentence(tmp_path, decoder_context, monkeypatch):
    overrides = ["method=ladir", *MICRO_SETTINGS,
                 f"method_options={{decoder_context: {decoder_context}, max_sentence_tokens: 8}}"]
    config = load_config("tiny", None, [parse_override(o) for o in overrides])
    method = get_method_class("ladir")(RunContext(config, tmp_path / "r", tmp_path))
    method.load_untrained()
    method.stats.mean += 0.5  # a normalisation that is not the identity, so it must be applied
    problems = method.ctx.task.problems("test")[:3]
    prompts = [p["prompt"] for p in problems]
    shape = (method.options.latent_tokens, method.options.latent_dim)
    reencoder = SentenceReencoder(method, problems)
    project, reasoning = reencoder.project, reencoder.sentences
    torch.manual_seed(0)
    first, second = torch.randn(3, *shape), torch.randn(3, *shape)

    out = project(0, first, torch.tensor([True, False, True]))
    assert [len(r) for r in reasoning] == [1, 0, 1]  # rows that stopped reasoning are left alone
    assert torch.equal(out[1], first[1])
    texts = method.decode_blocks(first[[0, 2]], prompts[0::2] if decoder_context == "reasoning" else None)
    assert [reasoning[0][0], reasoning[2][0]] == texts
    codes = method.stats.normalize(encode_means(method.vae, list(zip(prompts[0::2], texts))))
    assert torch.allclose(out[[0, 2]], codes, atol=1e-6)

    out = project(1, second, torch.tensor([True, True, False]))
    assert [len(r) for r in reasoning] == [2, 1, 1]
    # the second sentence is written, and encoded, after the first where the decoder reads the reasoning
    contexts = ([f"{prompts[0]} {reasoning[0][0]}", prompts[1]] if decoder_context == "reasoning"
                else prompts[:2])
    pairs = [(contexts[0], reasoning[0][1]), (contexts[1], reasoning[1][0])]
    assert torch.allclose(out[:2], method.stats.normalize(encode_means(method.vae, pairs)), atol=1e-6)

    # sampling with the knob commits the projection's output and writes its sentences, decoded once
    method.decode_reasoning = lambda *a: pytest.fail("re-encoded sentences were decoded a second time")
    calls, written = [], []
    project_unspied = SentenceReencoder.project

    def spy(self, block, z, active):
        if not written or written[-1] is not self.sentences:
            written.append(self.sentences)
        calls.append(project_unspied(self, block, z, active))
        return calls[-1]

    monkeypatch.setattr(SentenceReencoder, "project", spy)
    ((completion,),) = method.sample(problems[:1], 1, steps=2, max_blocks=2, max_answer_tokens=4, reencode=True)
    assert calls and written[0][0] and completion.startswith(" ".join(written[0][0]))
    calls.clear()
    z, present = method.sample_blocks(problems[:1], steps=2, max_blocks=2, reencode=True)
    assert len(calls) == int(present[0].sum()) >= 1
    assert all(torch.equal(z[0, b], calls[b][0]) for b in range(len(calls)))


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("device, tabulated", [("cpu", False), ("cpu", True), pytest.param("cuda", False, marks=CUDA)])
def test_tiny_train_resume_and_sample(tmp_path, device, tabulated, micro_base, monkeypatch):
    # tabulated: stages 1 and 2 read the oracle blocks from `tabulate_oracle_blocks`' table, whatever the budget
    tables = []
    monkeypatch.setattr(LaDiR, "TABLE_MIN_EPOCHS", 0.0 if tabulated else float("inf"))
    tabulate = LaDiR.tabulate_oracle_blocks
    monkeypatch.setattr(LaDiR, "tabulate_oracle_blocks", lambda self: tables.append(tabulate(self)) or tables[-1])
    overrides = [*MICRO_SETTINGS, "method=ladir", "task=countdown3", f"device={device}", "train.steps=6",
                 "train.checkpoint_every=2", "method_options={latent_tokens: 2, latent_dim: 4, vae_steps: 4, "
                 "stage2_steps: 4, stage2_euler_steps: 2, stats_problems: 20, report_problems: 4}"]
    config = load_config("tiny", None, [parse_override(o) for o in overrides])
    shutil.copytree(micro_base / "_base", tmp_path / "runs" / "_base")  # the cached base, as after any run
    ctx = RunContext(config, tmp_path / "runs" / "r", tmp_path / "runs")
    method = get_method_class("ladir")(ctx)
    method.train()
    assert [table is not None for table in tables] == [tabulated] and method.oracle_table is None
    run_dir = ctx.run_dir
    report = json.loads((run_dir / "vae" / "report.json").read_text())
    assert 0 <= report["reconstruction"]["exact_match"] <= 1 and report["reconstruction"]["n_sentences"] > 0
    assert len(report["latent_stats"]["mean"]) == 2 and len(report["latent_stats"]["std"][0]) == 4
    assert [len(checkpoints(run_dir / p)) > 0 for p in ("vae", "stage1", "stage2")] == [True] * 3

    # Resume stage 2 from its step-2 checkpoint: the replayed steps give the same final weights.
    stage2 = run_dir / "stage2"
    final = _weights(checkpoints(stage2)[-1][1])
    (stage2 / "DONE").unlink()
    for step, path in checkpoints(stage2):
        if step > 2:
            shutil.rmtree(path)
    get_method_class("ladir")(ctx).train()
    assert len(tables) == 2, "stage 2 resumed: the table is built again, the same"
    resumed = _weights(checkpoints(stage2)[-1][1])
    assert all(torch.equal(final[k], resumed[k]) for k in final)

    method = get_method_class("ladir")(ctx)
    method.load()
    problems = ctx.task.problems("test")[:2]
    torch.manual_seed(0)
    samples = method.sample(problems, 3, steps=2, max_blocks=2, max_answer_tokens=12, batch_size=2)
    torch.manual_seed(0)
    uncached = method.sample(problems, 3, steps=2, max_blocks=2, max_answer_tokens=12, batch_size=2, cache=False)
    if device == "cpu":  # on GPU, kernels for different shapes may round differently
        assert samples == uncached
    assert [len(s) for s in samples] == [3, 3] and all(isinstance(c, str) for s in samples for c in s)

    trace = method.trace(problems[0], steps=4, seed=0, max_blocks=2)
    blocks = [r for r in trace if r["block"] is not None]
    assert blocks and {r["t"] for r in blocks} == {1.0, 0.75, 0.5, 0.25, 0.0}
    assert trace[-1]["block"] is None and isinstance(trace[-1]["text"], str)


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(checkpoint.rglob("*.safetensors")):
        tensors.update({f"{file.parent.name}/{k}": v for k, v in load_file(str(file)).items()})
    return tensors


def test_the_paper_config_file_loads_over_paper_8b():
    """harness/presets/configs/ladir-paper.yaml (README, "Reproducing the paper at scale") is a valid
    `--config` over the paper-8b preset, with the paper's stated values."""
    from harness.config import PRESET_DIR, preset_names
    from harness.runs import resolved_options
    from ladir.method import LaDiR

    path = PRESET_DIR / "configs" / "ladir-paper.yaml"
    config = load_config("paper-8b", path, [parse_override("method=ladir")])
    options = resolved_options(LaDiR, config.method_options)
    assert config.model.name == "meta-llama/Llama-3.1-8B" and config.eval.k == 100
    assert (options["latent_noise"], options["token_replace_prob"], options["stage2_euler_steps"]) == (3.0, 0.3, 10)
    assert (options["stage2_t0"], options["stage2_tf_answer"], options["vae_decoder"]) == (1.0, 0.0, "frozen")
    assert "ladir-paper" not in preset_names()  # a config file, not a preset of its own


def test_a_run_saved_before_decoder_context_existed_keeps_the_decoder_it_was_trained_with(tmp_path):
    import yaml

    from harness.runs import create_run, read_saved_config

    overrides = ["method=ladir", "task=countdown3", *MICRO_SETTINGS]
    _, ctx = create_run(load_config("tiny", None, [parse_override(o) for o in overrides]), "r", tmp_path)
    path = ctx.run_dir / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    assert saved["method_options"]["decoder_context"] == "reasoning"  # today's default, written out
    del saved["method_options"]["decoder_context"]  # as code older than the option wrote it
    path.write_text(yaml.safe_dump(saved))
    assert read_saved_config(path).method_options["decoder_context"] == "none"  # how it was trained


@pytest.mark.parametrize("steps, tabulated", [(6, False), (100, True)])
def test_a_run_that_draws_its_problems_twice_encodes_each_oracle_block_once(tmp_path, steps, tabulated):
    overrides = [*MICRO_SETTINGS, "method=ladir", "task=countdown3", f"train.steps={steps}",
                 "method_options={latent_tokens: 2, latent_dim: 4}"]
    ctx = RunContext(load_config("tiny", None, [parse_override(o) for o in overrides]), tmp_path / "r", tmp_path)
    method = get_method_class("ladir")(ctx)
    method.load_untrained()
    table = method.tabulate_oracle_blocks()  # 100 steps x 8 problems >= twice the 400 training problems
    assert (table is not None) == tabulated
    if not tabulated:
        return
    problems = ctx.train_problems()
    assert set(table) == {p["task_id"] for p in problems}
    assert all(torch.equal(table[k], again) for k, again in method.tabulate_oracle_blocks().items())  # resumable
    batch = ctx.batch("stage1", 3)
    fresh = method.oracle_batch(batch).blocks
    method.oracle_table = table
    tabled = method.oracle_batch(batch).blocks
    assert [z.shape for z in tabled] == [z.shape for z in fresh]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(tabled, fresh, strict=True))
