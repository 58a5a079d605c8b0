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


def test_the_reasoner_options_are_ladir_options():
    assert REASONER_OPTIONS <= {field.name for field in dataclasses.fields(LaDiROptions)}
    assert not {"vae_steps", "beta", "latent_tokens", "decoder_context", "max_blocks"} & REASONER_OPTIONS


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
