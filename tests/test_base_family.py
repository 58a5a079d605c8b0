"""A base per method family: the AR base stays where cached bases already are, the masked-diffusion
base trains with MDM's own loss on the same batches for the same budget and is cached beside it,
`scratch` trains none, and the manifest says which one a run started from."""

from __future__ import annotations

import json

import pytest
import torch

from harness.backbone import BASE_OBJECTIVES, SCRATCH
from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.errors import BadInput
from harness.evaluate.provenance import manifest
from harness.jsonl import iter_jsonl
from harness.lm import IGNORE
from harness.train.checkpoint import DONE_MARKER
from tests.conftest import MICRO_SETTINGS, micro_args, run_cli

MICRO = [*MICRO_SETTINGS, "train.base_steps=3", "task_options.train_size=64"]


def context(tmp_path, method: str, *overrides: str, micro: bool = True) -> RunContext:
    settings = [*(MICRO if micro else []), "task=countdown3", f"method={method}", *overrides]
    config = load_config("tiny", None, [parse_override(s) for s in settings])
    return RunContext(config, tmp_path / "run", tmp_path / "runs")


def test_the_ar_base_keeps_its_cache_path(tmp_path):
    import baselines.mdm  # noqa: F401  (registers the masked-diffusion objective)

    ar, mdm = (context(tmp_path, method, "task=countdown4", micro=False) for method in ("ar-sft", "mdm"))
    # the tiny preset's Countdown-4 base, where it was cached before there were families
    assert ar.backbone.directory == tmp_path / "runs" / "_base" / "countdown4-seed0-a309d3de7d"
    assert ar.backbone.base_directory(ar.backbone.objective) == ar.backbone.directory / "base"
    assert mdm.backbone.directory == ar.backbone.directory  # one tokenizer for every family
    assert mdm.backbone.objective == "masked-diffusion"
    assert mdm.backbone.base_directory("masked-diffusion") == ar.backbone.directory / "base-masked-diffusion-r1"
    for method, objective in [("coconut", "ar"), ("ladir", "ar"), ("ld4lg", "ar"), ("mtp", "ar"), ("ar-sft", "ar")]:
        assert context(tmp_path, method).backbone.objective == objective
    assert context(tmp_path, "mdm", "method_options.base=ar").backbone.objective == "ar"
    with pytest.raises(BadInput, match="unknown base objective"):
        _ = context(tmp_path, "mdm", "method_options.base=bert").backbone.objective


def test_two_pretrained_checkpoints_whose_paths_end_alike_keep_their_own_tokenizer_folders(tmp_path):
    # two runs' checkpoints in two runs roots: the paths differ only beyond the readable tail
    tail = "/" + "a-run-name-long-enough-to-fill-the-readable-part" * 2 + "/sft/checkpoints/step-0004800/model"
    first, second = (context(tmp_path, "ar-sft", f"model.name=/{root}{tail}", micro=False).backbone.directory
                     for root in ("experiment-1", "experiment-2"))
    assert first != second
    assert first.parent == second.parent == tmp_path / "runs" / "_base"
    assert first.name.startswith("pretrained-") and first.name[:-9] == second.name[:-9]  # the same readable tail
    # and the same name is the same folder, so a run resumed or a second run shares it
    again = context(tmp_path, "ar-sft", f"model.name=/experiment-1{tail}", micro=False).backbone.directory
    assert again == first


def test_the_masked_diffusion_base_trains_with_mdms_loss_beside_the_ar_base(tmp_path, monkeypatch):
    import baselines.mdm

    seen = []
    real = baselines.mdm.diffusion_loss

    def spy(logits, labels, t, target_length):
        seen.append(labels.clone())
        return real(logits, labels, t, target_length)

    monkeypatch.setattr("baselines.mdm.diffusion_loss", spy)
    mdm = context(tmp_path, "mdm")
    md_model = mdm.backbone.base_model()
    directory = mdm.backbone.directory
    assert (directory / "base-masked-diffusion-r1" / DONE_MARKER).exists()
    assert not (directory / "base").exists()
    assert len(seen) == 3  # train.base_steps
    # the whole training text is maskable (question included), never `<s>` nor padding
    assert all(bool((labels[:, 0] == IGNORE).all()) for labels in seen)
    question_lengths = [len(mdm.tokenizer.encode(p["prompt"], add_special_tokens=False)) for p in mdm.batch("base", 1)]
    masked_in_question = sum(int((row[1:1 + n] != IGNORE).sum()) for row, n in zip(seen[0], question_lengths))
    assert masked_in_question > 0, "no question token was masked"
    md_log = [json.loads(line) for line in (directory / "base-masked-diffusion-r1" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in md_log] == [1, 2, 3] and all(0 < r["mask_rate"] <= 1 for r in md_log)

    # The AR family's base: same directory and tokenizer, its own phase, the same batches and budget.
    ar = context(tmp_path, "ar-sft")
    calls = len(seen)
    ar_model = ar.backbone.base_model()
    assert len(seen) == calls, "the AR base used the masked-diffusion loss"
    ar_log = [json.loads(line) for line in (directory / "base" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ar_log] == [r["step"] for r in md_log]
    assert not torch.equal(ar_model.lm_head.weight, md_model.lm_head.weight)
    # cached: a second MDM run loads the masked-diffusion base without training it again
    again = context(tmp_path, "mdm").backbone.base_model()
    assert len(seen) == calls and torch.equal(again.lm_head.weight, md_model.lm_head.weight)


def test_scratch_trains_no_base_and_the_manifest_names_the_start(tmp_path):
    scratch = context(tmp_path, "mdm", f"method_options.base={SCRATCH}")
    model = scratch.backbone.base_model()
    assert torch.equal(model.lm_head.weight, scratch.backbone.fresh_model().lm_head.weight)
    assert not list((tmp_path / "runs" / "_base").glob("*/base*"))
    assert manifest(scratch, {})["base_objective"] == "scratch"
    assert manifest(context(tmp_path, "mdm"), {})["base_objective"] == "masked-diffusion"
    assert manifest(context(tmp_path, "ar-sft"), {})["base_objective"] == "ar"
    assert set(BASE_OBJECTIVES) >= {"ar", "masked-diffusion"}


def test_a_checkpoint_is_a_backbone_so_a_second_cycle_starts_from_its_weights(ar_sft_micro, tmp_path):
    from transformers import AutoModelForCausalLM

    checkpoint = ar_sft_micro / "ar-sft" / "sft" / "checkpoints" / "step-0000008" / "model"
    second = context(tmp_path, "mdm", f"model.name={checkpoint}")
    assert second.backbone.objective == "pretrained"
    trained = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    start = second.backbone.base_model().state_dict()
    assert start.keys() == trained.keys() and all(torch.equal(start[k], trained[k]) for k in trained)
    # through the CLI: the run trains from those weights with no base phase of its own
    runs = tmp_path / "cli-runs"
    run_cli(["train", "--method", "ar-sft", "--task", "countdown3", "--steps", "2", "--model", str(checkpoint),
             "--run", "second", *micro_args()], runs)
    assert [p.name for p in (runs / "_base").iterdir()] == [second.backbone.directory.name]
    assert not list((runs / "_base").glob("*/base*"))
    assert (runs / "second" / "sft" / DONE_MARKER).is_file()
    first_loss, second_loss = (next(iter_jsonl(root / run / "sft" / "log.jsonl"))["loss"]
                               for root, run in ((ar_sft_micro, "ar-sft"), (runs, "second")))
    assert second_loss < first_loss  # it starts where the first cycle ended, not from the base
