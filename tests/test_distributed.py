"""Distributed training: two CPU processes (gloo, launched with torch.distributed.run) train to the
same weights as one process accumulating the same micro-batches, resume each other's checkpoints, and
write every file once; the micro-batches of a step partition its batch; bad layouts are one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.backbone import SharedBackbone
from harness.config import load_config, parse_override
from harness.train.checkpoint import DONE_MARKER
from harness.train.seeding import Shard, batch_indices
from tests.conftest import MICRO_SETTINGS, micro_args, run_cli

TRAIN = ["train", "--method", "ar-sft", "--task", "countdown3", "--steps", "4", "--device", "cpu"]
LAYOUT = ["train.checkpoint_every=2"]


def _launch(runs_dir: Path, run: str, processes: int, *settings: str) -> subprocess.CompletedProcess:
    """`ladir-bench train` on `processes` CPU processes; `--` keeps torchrun from reading `--run` as its own."""
    env = {**os.environ, "LADIR_NO_PROGRESS": "1", "LADIR_RUNS": str(runs_dir), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "-m", "--",
               "harness.cli", *TRAIN, "--run", run, *micro_args(*LAYOUT, *settings)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def _weights(runs_dir: Path, run: str) -> dict[str, torch.Tensor]:
    (folder,) = sorted((runs_dir / run / "sft" / "checkpoints").iterdir())[-1:]
    assert folder.name == "step-0000004"
    return load_file(str(folder / "model" / "model.safetensors"))


def _assert_equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=0), key


@pytest.mark.slow
def test_two_processes_equal_one_accumulating_and_resume_across_process_counts(tmp_path):
    runs_dir = tmp_path / "runs"
    # one process, the step's 8 problems as 2 accumulated micro-batches of 4; trains the shared base too
    run_cli([*TRAIN, "--run", "one", *micro_args(*LAYOUT, "train.grad_accum_steps=2")], runs_dir,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
    one = _weights(runs_dir, "one")

    two = _launch(runs_dir, "two", 2)
    _assert_equal_weights(one, _weights(runs_dir, "two"))
    records = [json.loads(line) for line in (runs_dir / "two" / "sft" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # once, not once per process
    one_records = [json.loads(line) for line in (runs_dir / "one" / "sft" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in one_records], abs=1e-6)
    assert json.loads((runs_dir / "two" / "sft" / DONE_MARKER).read_text())["steps"] == 4
    assert two.stderr.count("done: ") == 1
    assert not list((runs_dir / "two").rglob(".tmp-*"))

    # the one-process run stopped after its step-2 checkpoint, continued on two processes
    shutil.copytree(runs_dir / "one", runs_dir / "resumed")
    phase = runs_dir / "resumed" / "sft"
    shutil.rmtree(phase / "checkpoints" / "step-0000004")
    (phase / DONE_MARKER).unlink()
    _launch(runs_dir, "resumed", 2)
    _assert_equal_weights(one, _weights(runs_dir, "resumed"))
    assert [json.loads(line)["step"] for line in (phase / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


@pytest.mark.parametrize("micro_batches", [1, 2, 3, 4, 8])
def test_micro_batches_partition_the_step_batch(micro_batches):
    full = batch_indices(0, "sft", 5, population=50, batch_size=24)
    shards = []
    for micro in range(micro_batches):
        shards.append(batch_indices(0, "sft", 5, population=50, batch_size=24, shard=Shard(micro, micro_batches)))
    assert sum(len(s) for s in shards) == len(full)
    # every position of the batch in exactly one shard: position i goes to shard i mod M
    assert [shards[i % micro_batches][i // micro_batches] for i in range(len(full))] == full
    assert batch_indices(0, "sft", 5, population=50, batch_size=24) == full  # no shard: the whole batch


def test_batch_not_divisible_into_micro_batches_is_one_line(runs_dir):
    result = run_cli([*TRAIN, *micro_args("train.grad_accum_steps=3")], runs_dir, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.batch_size=8" in lines[0] and "train.grad_accum_steps=3" in lines[0]
    assert not runs_dir.exists() or not list(runs_dir.rglob("config.yaml"))


def test_fp16_on_cpu_is_one_line(runs_dir):
    result = run_cli([*TRAIN, *micro_args("train.mixed_precision=fp16")], runs_dir, check=False)
    assert result.returncode == 2 and "fp16 needs a GPU" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    bad = run_cli([*TRAIN, *micro_args("train.mixed_precision=fp8")], runs_dir, check=False)
    assert bad.returncode == 2 and "train.mixed_precision must be one of no, bf16, fp16" in bad.stderr


def _fit_tiny_lm(directory: Path, monkeypatch, **train_fields) -> dict:
    """Three steps of a 2-layer Llama on fixed random tokens through the Trainer: how often its MLPs ran
    (a checkpointed layer runs again in backward), the output dtypes of its attention projections, the
    attention it trained with and has after, the losses and the weights it saved."""
    from collections import Counter

    from accelerate.state import AcceleratorState
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama import modeling_llama

    from harness.config import TrainConfig
    from harness.train.checkpoint import final_checkpoint
    from harness.train.trainer import Phase, Trainer

    seen: Counter = Counter()
    mlp_forward = modeling_llama.LlamaMLP.forward

    def counted(self, hidden):  # a module hook would not see the recomputation
        seen["mlp_calls"] += 1
        return mlp_forward(self, hidden)

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", counted)
    # accelerate keeps one precision per process (a run has one); these fits each set their own
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=64,
                                         attn_implementation="sdpa"))
    tokens = torch.randint(0, 40, (8, 24), generator=torch.Generator().manual_seed(1))
    for layer in model.model.layers:
        layer.self_attn.q_proj.register_forward_hook(lambda _m, _i, out: seen.update([str(out.dtype)]))
    train = TrainConfig(steps=3, batch_size=8, warmup_steps=1, checkpoint_every=3, log_every=1, **train_fields)
    losses = []

    def loss_fn(step: int, shard):
        loss = model(input_ids=tokens, labels=tokens).loss
        losses.append(loss.item())
        seen["attention " + model.config._attn_implementation] += 1
        return loss, {}

    try:
        Trainer(Phase("lm", directory, steps=3, lr=1e-2, seed=0, train=train), model).fit(loss_fn)
    finally:  # the tests after this one, in this process, build their own Accelerator
        AcceleratorState._reset_state(reset_partial_state=True)
    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", mlp_forward)  # a later call counts on its own
    weights = load_file(str(final_checkpoint(directory)[1] / "model" / "model.safetensors"))
    seen["attention after " + model.config._attn_implementation] += 1
    return {"seen": seen, "losses": losses, "weights": weights}


def test_gradient_checkpointing_recomputes_and_keeps_the_update(tmp_path, monkeypatch):
    plain = _fit_tiny_lm(tmp_path / "plain", monkeypatch)
    recomputed = _fit_tiny_lm(tmp_path / "recomputed", monkeypatch, gradient_checkpointing=True)
    # every layer runs again in backward (2 layers x 3 steps forward, as many again recomputed)
    assert plain["seen"]["mlp_calls"] == 6 and recomputed["seen"]["mlp_calls"] == 12
    assert recomputed["losses"] == pytest.approx(plain["losses"], abs=1e-6)
    _assert_equal_weights(plain["weights"], recomputed["weights"])


def test_bf16_autocast_on_cpu_trains_float32_weights(tmp_path, monkeypatch):
    full = _fit_tiny_lm(tmp_path / "fp32", monkeypatch)
    bf16 = _fit_tiny_lm(tmp_path / "bf16", monkeypatch, mixed_precision="bf16")
    # the projections really ran in bf16 under autocast, and only there
    assert full["seen"]["torch.float32"] == 6 and "torch.bfloat16" not in full["seen"]
    assert bf16["seen"]["torch.bfloat16"] == 6 and "torch.float32" not in bf16["seen"]
    # master weights and checkpoints stay float32; the update is close to, not equal to, float32's
    assert {t.dtype for t in bf16["weights"].values()} == {torch.float32}
    assert bf16["losses"] != full["losses"]
    assert bf16["losses"] == pytest.approx(full["losses"], rel=2e-2)
    assert bf16["losses"][-1] < bf16["losses"][0]
    # the CPU's bf16 flash-attention backward is slow: bf16 trains with eager attention, fp32 with sdpa,
    # and both models attend with sdpa again once the phase is over (sampling is untouched)
    assert bf16["seen"]["attention eager"] == 3 and full["seen"]["attention sdpa"] == 3
    assert bf16["seen"]["attention after sdpa"] == full["seen"]["attention after sdpa"] == 1


def test_fsdp_config_on_cpu_is_one_line(runs_dir, monkeypatch):
    """accelerate would quietly train CPU processes unsharded under an FSDP config."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # as `accelerate launch` exports them
    monkeypatch.setenv("FSDP_VERSION", "2")
    result = run_cli([*TRAIN, *micro_args()], runs_dir, check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "FSDP (ACCELERATE_USE_FSDP, from an FSDP accelerate config) needs GPUs; this run is on cpu" in result.stderr
    assert not runs_dir.exists() or not list(runs_dir.rglob("config.yaml"))


def _base_directory(*settings: str) -> str:
    config = load_config("tiny", None, [parse_override(s) for s in [*MICRO_SETTINGS, "task=countdown3", *settings]])
    return SharedBackbone(config, None, Path("runs"), None, None, None, None).directory.name


def test_base_key_ignores_the_parallel_layout_and_keeps_cached_names():
    # the name the code before distributed training gave this base: cached bases stay valid
    assert _base_directory() == "countdown3-seed0-80dc1ec840"
    assert _base_directory("train.grad_accum_steps=4", "train.gradient_checkpointing=true", "train.lora_r=8") \
        == "countdown3-seed0-80dc1ec840"
    assert _base_directory("train.mixed_precision=bf16") != "countdown3-seed0-80dc1ec840"


def test_lora_checkpoint_is_a_plain_model_and_resumes_exactly(runs_dir):
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    lora = ["train.lora_r=4", "train.lr=1e-2"]
    run_cli([*TRAIN, "--run", "lora", *micro_args(*LAYOUT, *lora)], runs_dir)
    folder = runs_dir / "lora" / "sft" / "checkpoints" / "step-0000004"
    model = AutoModelForCausalLM.from_pretrained(folder / "model")  # merged: no peft needed to load it
    assert not any("lora" in name for name, _ in model.named_parameters())
    (base,) = (runs_dir / "_base").glob("countdown3-*")
    start = load_file(str(sorted((base / "base" / "checkpoints").iterdir())[-1] / "model" / "model.safetensors"))
    trained = load_file(str(folder / "model" / "model.safetensors"))
    assert not torch.equal(start["model.layers.0.self_attn.q_proj.weight"], trained["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(start["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])  # not adapted

    shutil.copytree(runs_dir / "lora", runs_dir / "lora-resumed")
    phase = runs_dir / "lora-resumed" / "sft"
    shutil.rmtree(phase / "checkpoints" / "step-0000004")
    (phase / DONE_MARKER).unlink()
    run_cli([*TRAIN, "--run", "lora-resumed", *micro_args(*LAYOUT, *lora)], runs_dir)
    _assert_equal_weights(trained, _weights(runs_dir, "lora-resumed"))
