"""LD4LG-style latent diffusion: one fixed-size latent for the whole completion (no blocks, no step
order, no answer loss into it), decoded to the full text; a tiny train + eval through the CLI."""

from __future__ import annotations

import json

import torch

from harness.runs import open_run
from tests.conftest import micro_args, run_cli

MICRO_LD4LG = ["method_options.vae_steps=6", "method_options.latent_tokens=3", "method_options.latent_dim=4",
               "method_options.stats_problems=50", "method_options.report_problems=5", "method_options.max_text_tokens=64"]


def test_tiny_train_eval_and_one_latent_per_completion(runs_dir, monkeypatch):
    run_cli(["train", "--method", "ld4lg", "--task", "countdown3", "--run", "l", "--steps", "6",
             *micro_args(*MICRO_LD4LG)], runs_dir)
    for phase in ("autoencoder", "diffusion"):
        assert (runs_dir / "l" / phase / "DONE").is_file()
    report = json.loads((runs_dir / "l" / "autoencoder" / "report.json").read_text())
    assert report["reconstruction"]["n_sentences"] == 5  # one text per held-out problem, not per sentence

    log = [json.loads(line) for line in (runs_dir / "l" / "diffusion" / "log.jsonl").read_text().splitlines()]
    assert "ans" not in log[0] and "spec" not in log[0]  # flow matching only: nothing else reaches the latent

    monkeypatch.setenv("LADIR_NO_PROGRESS", "1")
    method, ctx = open_run("l", runs_dir)
    problems = ctx.task.problems("train")[:4]
    batch = method.oracle_batch(problems)
    sentence_counts = {len(ctx.task.split_target(p["reference"])[0]) for p in problems}
    assert [tuple(b.shape) for b in batch.blocks] == [(1, 3, 4)] * 4 and batch.answer_ids == [[]] * 4
    assert len(sentence_counts) >= 1  # whatever the number of sentences, one latent of the same size
    # The latent encodes the whole completion: changing only the answer sentence changes it.
    changed = [{**problems[0], "reference": problems[0]["reference"].replace("The answer is", "The answer is 1+")}]
    assert not torch.allclose(method.oracle_batch(changed).blocks[0], batch.blocks[0])

    metrics = json.loads(run_cli(["eval", "--run", "l", "--k", "2", "--limit", "3", "--steps", "2", "--json"],
                                 runs_dir).stdout)
    assert metrics["method"] == "ld4lg" and metrics["n_samples"] == 6 and metrics["knobs"]["steps"] == 2

    # The probe: where between the autoencoder's ceiling and its own samples the completions break.
    record = json.loads(run_cli(["probe", "--run", "l", "--limit", "4", "--json"], runs_dir).stdout)
    problems = [p for p in ctx.task.problems("val") if p.get("reference")][:4]
    method.load()
    ceiling = method.reconstruction_ceiling(ctx.task, "val", problems)
    assert record["answer_acc_oracle"] == ceiling["passed"]  # the oracle latent is the ceiling's
    assert record["denoise_reach_pass"]["0.0"] == record["answer_acc_oracle"]  # noised to t0 = 0: the oracle
    assert record["first_block_valid"]["10"] == record["denoise_reach"]["1.0"]  # the same noise, the same steps
    assert set(record["denoise_reach"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    assert set(record["decoder_tolerance"]) == {"0.0", "0.25", "0.5", "1.0"}
    assert record["checkpoint"] == {"phase": "diffusion", "step": 6} and record["steps"] == 10
    assert all(0.0 <= record[key] <= 1.0 for key in ("answer_acc_shuffled", "answer_acc_noise", "pass1_generated",
                                                     "pass1_swapped", "block_valid"))


def test_the_frozen_autoencoders_latents_are_encoded_once_and_a_resumed_denoiser_is_bitwise_the_same(
        runs_dir, monkeypatch):
    import shutil

    from baselines.ld4lg import LD4LG
    from harness.train.checkpoint import checkpoints
    from ladir import vae as vae_module

    tables = []
    tabulate = vae_module.tabulate_latents
    monkeypatch.setattr(LD4LG, "TABLE_MIN_EPOCHS", 0.0)  # whatever the budget
    monkeypatch.setattr("baselines.ld4lg.tabulate_latents", lambda *a: tables.append(tabulate(*a)) or tables[-1])
    train = ["train", "--method", "ld4lg", "--task", "countdown3", "--run", "t", "--steps", "6",
             *micro_args(*MICRO_LD4LG)]
    run_cli(train, runs_dir)
    assert len(tables) == 1 and len(tables[0]) == 400  # every training problem, encoded once
    diffusion = runs_dir / "t" / "diffusion"
    final = {k: v.clone() for k, v in _state(checkpoints(diffusion)[-1][1]).items()}
    (diffusion / "DONE").unlink()
    for step, path in checkpoints(diffusion):
        if step > 4:
            shutil.rmtree(path)
    run_cli(train, runs_dir)  # resumes the denoiser from step 4, with the table built again
    assert len(tables) == 2 and all(torch.equal(tables[0][k], tables[1][k]) for k in tables[0])
    resumed = _state(checkpoints(diffusion)[-1][1])
    assert all(torch.equal(final[k], resumed[k]) for k in final)

    method, ctx = open_run("t", runs_dir)
    problems = ctx.train_problems()[:5]
    assert method.oracle_table is None  # only while training
    fresh = method.oracle_latents(problems)
    method.oracle_table = tables[0]
    assert torch.allclose(method.oracle_latents(problems), fresh, atol=1e-5)


def _state(checkpoint) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {f"{file.parent.name}/{key}": value for file in sorted(checkpoint.rglob("*.safetensors"))
            for key, value in load_file(str(file)).items()}
