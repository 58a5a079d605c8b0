"""Runs whose VAE is the same (same base, data and VAE settings) train it once: a stage-2 or sampling
ablation adopts the finished VAE of another run; a VAE ablation trains its own."""

from __future__ import annotations

import dataclasses
import json

from harness.train.checkpoint import final_checkpoint
from ladir.method import REASONER_OPTIONS, LaDiROptions
from tests.conftest import LADIR_MICRO, copy_run, run_cli


def _weights_file(run_dir):
    return next(final_checkpoint(run_dir / "vae")[1].rglob("*.safetensors"))


# another valid value for each option that is not a number or a flag
OTHER_CHOICE = {"vae_decoder": "trainable", "decoder_context": "none", "reasoner_init": "base",
                "oracle_latents": "sample", "stage2_answer": "implied"}


def _changed(name: str, value):
    if name in OTHER_CHOICE:
        return OTHER_CHOICE[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value / 2 if value else 0.1


def test_every_option_but_the_reasoners_keys_the_shared_vae(tmp_path):
    """Changing any option the VAE phase reads gives another shared VAE; changing a reasoner option
    (or the fine-tuning budget) keeps it, so a stage-2 ablation shares and a VAE ablation does not."""
    from harness.config import load_config, parse_override
    from harness.context import RunContext
    from harness.methods import get_method_class
    from tests.conftest import MICRO_SETTINGS

    def key(*settings: str):
        config = load_config("tiny", None, [parse_override(s) for s in
                                            ["method=ladir", "task=countdown3", *MICRO_SETTINGS, *settings]])
        ctx = RunContext(config, tmp_path / "runs" / "r", tmp_path / "runs")
        return get_method_class("ladir")(ctx).shared_vae_directory()

    base = key()
    assert REASONER_OPTIONS <= {field.name for field in dataclasses.fields(LaDiROptions)}
    for field in dataclasses.fields(LaDiROptions):
        other = key(f"method_options.{field.name}={_changed(field.name, field.default)}")
        assert (other == base) == (field.name in REASONER_OPTIONS), field.name
    assert key("train.steps=7") == base and key("eval.k=3") == base
    assert key("seed=1") != base and key("train.batch_size=4") != base and key("train.grad_accum_steps=2") != base


def test_a_stage2_ablation_adopts_the_finished_vae_and_a_vae_ablation_trains_its_own(ladir_micro, runs_dir):
    trained = copy_run(ladir_micro, "ladir", runs_dir)
    run_cli([*LADIR_MICRO, "--run", "ladir"], runs_dir)  # finished: publishes its VAE under _vae/
    shared = list((runs_dir / "_vae").iterdir())
    assert len(shared) == 1 and json.loads((shared[0] / "trained_by.json").read_text()) == {"run": "ladir"}

    stage2 = run_cli([*LADIR_MICRO, "--run", "no-stage2", "--set", "method_options.stage2_steps=0"], runs_dir)
    adopted = runs_dir / "no-stage2"
    assert "not retrained" in stage2.stdout + stage2.stderr
    assert _weights_file(adopted).stat().st_ino == _weights_file(trained).stat().st_ino  # one copy on disk
    assert json.loads((adopted / "vae" / "trained_by.json").read_text()) == {"run": "ladir"}
    assert final_checkpoint(adopted / "stage1")[0] == 4  # the whole budget in stage 1

    other = run_cli([*LADIR_MICRO, "--run", "beta", "--set", "method_options.beta=0.001"], runs_dir)
    own = runs_dir / "beta"
    assert "not retrained" not in other.stdout + other.stderr
    assert _weights_file(own).stat().st_ino != _weights_file(trained).stat().st_ino
    assert not (own / "vae" / "trained_by.json").exists() and len(list((runs_dir / "_vae").iterdir())) == 2
