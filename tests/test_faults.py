"""Faults survived with nothing lost: training, evaluations and ablation grids SIGKILLed at random
points (mid-append and mid-checkpoint included) resume to exactly the uninterrupted weights, samples and
metrics, a second process on the same run or results folder is refused, corrupt checkpoints and torn
logs are named or repaired, a full disk is one line."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from harness.locks import exclusive
from tests.conftest import AR_SFT_MICRO, copy_run, micro_args, run_cli

TIMING = {"samples_per_s", "scoring_seconds", "train_minutes"}  # wall-clock figures: all a resumption may change


def _results(runs_dir, run="f"):
    (out_dir,) = (runs_dir / run / "results" / "countdown3-test").iterdir()
    samples = [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]
    metrics = {k: v for k, v in json.loads((out_dir / "metrics.json").read_text()).items() if k not in TIMING}
    return out_dir, samples, metrics


@pytest.mark.slow
def test_eval_sigkilled_at_random_points_resumes_to_the_uninterrupted_result(tmp_path, ar_sft_micro):
    straight = tmp_path / "straight"
    copy_run(ar_sft_micro, "ar-sft", straight, "f")
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    # one problem per group (k = 2, batch 2): samples.jsonl grows by an append per problem
    evaluate = ["eval", "--run", "f", "--k", "2", "--limit", "16", "--knob", "batch_size=2", "--json"]
    run_cli(evaluate, straight, fresh_process=True)
    _, expected_samples, expected_metrics = _results(straight)

    env = {**os.environ, "LADIR_RUNS": str(killed), "LADIR_NO_PROGRESS": "1"}
    chance = random.Random(7)
    kills = 0
    for _ in range(3):
        out_dirs = list((killed / "f" / "results").glob("*/*"))
        before = len((out_dirs[0] / "samples.jsonl").read_text().splitlines()) if out_dirs else 0
        wanted = before + chance.randint(1, 6)  # a random point: after this many more lines
        process = subprocess.Popen([sys.executable, "-m", "harness.cli", *evaluate], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline:
            found = list((killed / "f" / "results").glob("*/*/samples.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= wanted:
                break
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        (samples_path,) = (killed / "f" / "results").glob("*/*/samples.jsonl")
        # a kill in the middle of an append: half a record, no newline
        with samples_path.open("a") as handle:
            handle.write('{"task_id": "countdown3/test/')
    assert kills >= 2, "the evaluation finished before it could be killed"

    resumed = run_cli(evaluate, killed, fresh_process=True)
    assert "resuming" in resumed.stderr
    _, samples, metrics = _results(killed)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(samples) == strip(expected_samples)  # every sample once, in order, the same completions
    assert metrics == expected_metrics


@pytest.mark.slow
def test_train_sigkilled_at_random_points_resumes_to_the_same_weights(tmp_path, micro_base):
    from safetensors.torch import load_file

    args = ["train", "--method", "ar-sft", "--task", "countdown3", "--run", "r", "--steps", "24",
            *micro_args("train.checkpoint_every=3")]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for runs in (straight, killed):  # both start from the same cached base
        shutil.copytree(micro_base / "_base", runs / "_base")
    run_cli(args, straight, fresh_process=True)
    env = {**os.environ, "LADIR_RUNS": str(killed), "LADIR_NO_PROGRESS": "1"}
    log = killed / "r" / "sft" / "log.jsonl"
    chance = random.Random(3)
    kills = 0
    for attempt in range(3):
        before = len(log.read_text().splitlines()) if log.is_file() else 0
        wanted = before + chance.randint(1, 5)
        process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline:
            staging = list((killed / "r" / "sft" / "checkpoints").glob(".tmp-*")) if attempt == 2 else []
            if staging or (log.is_file() and len(log.read_text().splitlines()) >= wanted):
                break  # mid-step, or (last attempt) mid-checkpoint write
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "training finished before it could be killed"
    resumed = run_cli(args, killed, fresh_process=True)
    assert "resumed from step" in resumed.stderr
    final = lambda root: sorted((root / "r" / "sft" / "checkpoints").glob("step-*"))[-1]  # noqa: E731
    assert final(killed).name == final(straight).name == "step-0000024"
    expected = load_file(str(final(straight) / "model" / "model.safetensors"))
    got = load_file(str(final(killed) / "model" / "model.safetensors"))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert not list((killed / "r" / "sft" / "checkpoints").glob(".tmp-*")), "a killed write's staging folder stayed"
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 25))


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGUSR1])
def test_train_stopped_by_a_signal_saves_its_step_and_resumes_to_the_same_weights(tmp_path, micro_base,
                                                                                  signal_number):
    """A scheduler's SIGTERM (or SLURM's SIGUSR1) ends training after the current step with a checkpoint
    of it, exit 143, even with no scheduled checkpoint in sight; the same command then finishes the run
    with the uninterrupted weights."""
    from safetensors.torch import load_file

    args = ["train", "--method", "ar-sft", "--task", "countdown3", "--run", "r", "--steps", "24",
            *micro_args("train.checkpoint_every=100")]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for runs in (straight, stopped):
        shutil.copytree(micro_base / "_base", runs / "_base")
    run_cli(args, straight, fresh_process=True)
    env = {**os.environ, "LADIR_RUNS": str(stopped), "LADIR_NO_PROGRESS": "1"}
    log = stopped / "r" / "sft" / "log.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if log.is_file() and log.read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert f"stopped by {signal.Signals(signal_number).name} at step" in stderr
    (saved,) = (stopped / "r" / "sft" / "checkpoints").glob("step-*")  # the step it was in, not a scheduled one
    step = int(saved.name.split("-")[1])
    assert 3 <= step < 24 and not (stopped / "r" / "sft" / "DONE").exists()

    resumed = run_cli(args, stopped, fresh_process=True)
    assert f"resumed from step {step}" in resumed.stderr
    final = lambda root: sorted((root / "r" / "sft" / "checkpoints").glob("step-*"))[-1]  # noqa: E731
    expected = load_file(str(final(straight) / "model" / "model.safetensors"))
    got = load_file(str(final(stopped) / "model" / "model.safetensors"))
    assert final(stopped).name == "step-0000024"
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.parametrize("signalled_at", [2, 4])
def test_a_stop_signal_in_a_phase_stops_after_its_step_even_the_last(tmp_path, signalled_at):
    """SIGTERM during step 2 of 4: a checkpoint of step 2, no DONE, Stopped. During the last step: the
    phase finishes (DONE) and then stops, rather than the signal being lost before the next phase."""
    from accelerate.state import AcceleratorState
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.config import TrainConfig
    from harness.errors import Stopped
    from harness.train.checkpoint import checkpoints, phase_done
    from harness.train.trainer import Phase, Trainer

    AcceleratorState._reset_state(reset_partial_state=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=32))
    tokens = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(1))
    train = TrainConfig(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=100, log_every=1)

    def loss_fn(step: int, shard):
        if step + 1 == signalled_at:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during the step, as a scheduler's would
        return model(input_ids=tokens, labels=tokens).loss, {}

    directory, handler = tmp_path / "lm", signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Stopped, match="stopped by SIGTERM"):
            Trainer(Phase("lm", directory, steps=4, lr=1e-2, seed=0, train=train), model).fit(loss_fn)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert [step for step, _ in checkpoints(directory)] == [signalled_at]
    assert phase_done(directory) == (signalled_at == 4)
    assert signal.getsignal(signal.SIGTERM) == handler  # the loop's handler is gone with it


@pytest.mark.slow
def test_ablate_sigkilled_twice_resumes_to_the_uninterrupted_grid(tmp_path):
    from tests.conftest import MICRO_SETTINGS

    settings = {s.split("=", 1)[0]: s.split("=", 1)[1] for s in MICRO_SETTINGS}
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({"name": "g", "method": "ar-sft", "task": "countdown3",
                                "settings": {**settings, "train.steps": 8, "train.checkpoint_every": 2},
                                "train_grid": {"train.lr": [0.001, 0.003]},
                                "eval": {"k": 2, "limit": 6}, "eval_grid": {"batch_size": [2]}}))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli(["ablate", "--grid", str(grid)], straight, fresh_process=True)

    env = {**os.environ, "LADIR_RUNS": str(killed), "LADIR_NO_PROGRESS": "1"}
    kills = 0
    # first mid-training of the first cell, then mid-evaluation of the second
    for ready in (lambda: any(killed.glob("g-lr0.001/sft/checkpoints/step-*")),
                  lambda: any(p.read_text() for p in killed.glob("g-lr0.003/results/*/*/samples.jsonl"))):
        process = subprocess.Popen([sys.executable, "-m", "harness.cli", "ablate", "--grid", str(grid)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while process.poll() is None and time.time() < deadline and not ready():
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills == 2, "the grid finished before it could be killed"
    run_cli(["ablate", "--grid", str(grid)], killed, fresh_process=True)

    def outcome(root):
        found = {}
        for path in sorted(root.glob("g-*/results/*/*/metrics.json")):
            metrics = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
            samples = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                       for line in path.with_name("samples.jsonl").read_text().splitlines()]
            found[str(path.relative_to(root))] = (metrics, samples)
        return found

    expected = outcome(straight)
    assert len(expected) == 2 and outcome(killed) == expected


def test_a_second_process_on_a_run_or_results_folder_is_refused(runs_dir, ar_sft_micro):
    train = [*AR_SFT_MICRO, "--run", "f"]
    copy_run(ar_sft_micro, "ar-sft", runs_dir, "f")
    with exclusive(runs_dir / "f" / "sft", "training phase"):  # as if another `train` held it
        # the finished phase still answers `train` without touching it: reopen it unfinished
        (runs_dir / "f" / "sft" / "DONE").unlink()
        refused = run_cli(train, runs_dir, check=False, fresh_process=True)
    assert refused.returncode == 2 and "in use by another process" in refused.stderr
    assert f"pid {os.getpid()}" in refused.stderr and "Traceback" not in refused.stderr
    run_cli(train, runs_dir)  # the lock died with its holder: training goes on

    evaluate = ["eval", "--run", "f", "--k", "1", "--limit", "2", "--json"]
    run_cli(evaluate, runs_dir)
    out_dir, samples, _ = _results(runs_dir)
    with exclusive(out_dir, "results folder"):
        busy = run_cli(evaluate, runs_dir, check=False, fresh_process=True)
    assert busy.returncode == 2 and "results folder" in busy.stderr and "in use" in busy.stderr
    assert _results(runs_dir)[1] == samples  # untouched


def test_the_holder_of_a_lock_is_named_and_asking_leaves_it_free(tmp_path):
    from harness.locks import holder

    folder = tmp_path / "phase"
    assert holder(folder) is None  # no lock file yet
    with exclusive(folder, "training phase"):
        assert holder(folder) == str(os.getpid())
    assert holder(folder) is None
    with exclusive(folder, "training phase"):  # asking did not keep it
        pass


def test_a_grid_leaves_a_run_another_process_holds_for_the_end(tmp_path, monkeypatch):
    """Two `ablate`/`reproduce` processes on one grid split its runs: the held run waits, the rest go on."""
    from contextlib import ExitStack

    import harness.tools.ablation as ablation
    from harness.locks import holder as holder_of
    from tests.conftest import MICRO_SETTINGS

    settings = {s.split("=", 1)[0]: s.split("=", 1)[1] for s in MICRO_SETTINGS}
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({"name": "g", "method": "ar-sft", "task": "countdown3",
                                "settings": {**settings, "train.steps": 4},
                                "train_grid": {"train.lr": [0.001, 0.003]}, "eval": {"k": 1, "limit": 2}}))
    runs = tmp_path / "runs"
    held, other = runs / "g-lr0.001" / "sft", runs / "g-lr0.003" / "sft"
    seen_while_held = []
    with ExitStack() as holder:
        holder.enter_context(exclusive(held, "training phase"))  # as a second process would hold it

        def sleep(seconds):  # the holder finishes its work (here: gives the run up) while the grid waits
            seen_while_held.append((other / "DONE").exists())
            holder.close()

        entered = []
        train_and_evaluate = ablation._train_and_evaluate

        def recording(plan, runs_root, eval_spec):
            entered.append((plan.name, holder_of(held)))
            return train_and_evaluate(plan, runs_root, eval_spec)

        monkeypatch.setattr(ablation, "sleep", sleep)
        monkeypatch.setattr(ablation, "_train_and_evaluate", recording)
        folders = ablation.run_grid(grid, runs)
    assert seen_while_held == [True]  # the free run was trained while the held one waited
    # the held run's setup never started while it was held: skipped, then waited for, before it
    assert entered == [("g-lr0.003", str(os.getpid())), ("g-lr0.001", None)]
    assert [f.parts[len(runs.parts)] for f in folders] == ["g-lr0.001", "g-lr0.003"]  # the grid's order
    assert all((f / "metrics.json").exists() for f in folders) and (held / "DONE").exists()


def test_a_run_sharing_a_phase_with_a_held_run_waits_for_it_too(tmp_path, monkeypatch):
    """Two LaDiR runs with the same VAE: while another process trains the first (and so the VAE), the
    second is not started on a VAE of its own; both are come back to, in order, once it is free."""
    import harness.locks
    import harness.tools.ablation as ablation
    from harness.errors import InUse

    plans = [SimpleNamespace(name=name) for name in ("first", "second", "other")]
    vae = tmp_path / "_vae" / "shared"
    shared = {"first": {vae}, "second": {vae}, "other": set()}
    holding = {"first": True}
    calls = []

    def train_and_evaluate(plan, runs_root, eval_spec):
        calls.append(plan.name)
        if holding.get(plan.name):
            raise InUse(f"training phase {plan.name} is in use by another process", tmp_path / plan.name)
        return [plan.name]

    def sleep(seconds):  # the other process finishes
        holding["first"] = False

    monkeypatch.setattr(ablation, "_train_and_evaluate", train_and_evaluate)
    monkeypatch.setattr(ablation, "_shared_phases", lambda plan, runs_root: shared[plan.name])
    monkeypatch.setattr(ablation, "sleep", sleep)
    monkeypatch.setattr(harness.locks, "holder", lambda directory: "123" if holding["first"] else None)
    assert ablation.run_plan(plans, tmp_path, None) == ["first", "second", "other"]
    assert calls == ["first", "other", "first", "first", "second"]


def test_a_run_whose_shared_base_another_process_trains_is_left_for_the_end(tmp_path, monkeypatch):
    """A shared phase (the base LM) is waited for by a lone `train`, but a grid moves on to runs that do
    not need it and comes back once the other process is done."""
    from contextlib import ExitStack

    import harness.tools.ablation as ablation
    from harness.errors import InUse
    from harness.locks import moving_on_from_shared

    base = tmp_path / "_base" / "countdown3-seed0"
    calls = []
    with ExitStack() as other_process:
        other_process.enter_context(exclusive(base, "training phase 'base'"))
        with moving_on_from_shared(), pytest.raises(InUse, match="in use by another process"):
            with exclusive(base, "training phase 'base'", wait=True):
                pass

        def train_and_evaluate(plan, runs_root, eval_spec):
            calls.append(plan.name)
            if plan.name == "needs-base":
                with exclusive(base, "training phase 'base'", wait=True):
                    return [plan.name]
            other_process.close()  # it finishes the base while this run trains
            return [plan.name]

        monkeypatch.setattr(ablation, "_train_and_evaluate", train_and_evaluate)
        monkeypatch.setattr(ablation, "_shared_phases", lambda plan, runs_root: set())
        plans = [SimpleNamespace(name=name) for name in ("needs-base", "other")]
        assert ablation.run_plan(plans, tmp_path, None) == ["needs-base", "other"]
    assert calls == ["needs-base", "other", "needs-base"]


def test_corrupt_checkpoints_are_named_and_torn_logs_repaired(runs_dir, ar_sft_micro):
    copy_run(ar_sft_micro, "ar-sft", runs_dir, "f")  # checkpoints at steps 4 and 8 (checkpoint_every=4)
    phase = runs_dir / "f" / "sft"
    final = phase / "checkpoints" / "step-0000008" / "model" / "model.safetensors"
    original = final.read_bytes()
    final.write_bytes(original[: len(original) // 2])
    broken = run_cli(["eval", "--run", "f", "--k", "1", "--limit", "1"], runs_dir, check=False)
    assert broken.returncode == 2 and "corrupt or truncated" in broken.stderr and "step-0000008" in broken.stderr
    assert "Traceback" not in broken.stderr
    final.write_bytes(original)

    # An unfinished phase whose last checkpoint's trainer state is cut short, and whose log ends in a
    # torn line: resuming names the checkpoint; once it is removed, training resumes from the one before.
    (phase / "DONE").unlink()
    state = phase / "checkpoints" / "step-0000008" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with (phase / "log.jsonl").open("a") as log:
        log.write('{"step": 9, "lo')
    train = ["train", "--method", "ar-sft", "--task", "countdown3", "--run", "f", "--steps", "8", *micro_args()]
    refused = run_cli(train, runs_dir, check=False)
    assert refused.returncode == 2 and "trainer_state.pt" in refused.stderr and "step-0000008" in refused.stderr
    shutil.rmtree(phase / "checkpoints" / "step-0000008")
    resumed = run_cli(train, runs_dir)
    assert "resumed from step 4" in resumed.stderr
    steps = [json.loads(line)["step"] for line in (phase / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert json.loads((phase / "DONE").read_text())["steps"] == 8


def test_samples_drawn_from_earlier_weights_are_set_aside_not_resumed(runs_dir, ar_sft_micro):
    """A run evaluated while it trained (its last checkpoint then step 4) and evaluated again once trained:
    the results folder has the same name, but the step-4 samples are moved aside and drawn anew from
    step 8's weights, not resumed or scored as theirs."""
    copy_run(ar_sft_micro, "ar-sft", runs_dir, "f")
    phase = runs_dir / "f" / "sft"
    later = phase / "checkpoints" / "step-0000008"
    shutil.move(later, runs_dir / "step-8")
    (phase / "DONE").rename(runs_dir / "DONE")
    evaluate = ["eval", "--run", "f", "--k", "2", "--limit", "3"]
    run_cli(evaluate, runs_dir)
    (out_dir,) = (runs_dir / "f" / "results").glob("*/k2*")
    assert json.loads((out_dir / "metrics.json").read_text())["checkpoint"]["step"] == 4
    shutil.move(runs_dir / "step-8", later)
    (runs_dir / "DONE").rename(phase / "DONE")
    again = run_cli(evaluate, runs_dir)
    assert "drawn from other weights" in again.stdout + again.stderr
    (aside,) = out_dir.glob("other-weights-*")
    assert len((aside / "samples.jsonl").read_text().splitlines()) == 6
    assert json.loads((out_dir / "metrics.json").read_text())["checkpoint"]["step"] == 8
    sittings = [json.loads(line) for line in (out_dir / "sampled_by.jsonl").read_text().splitlines()]
    assert [s["checkpoint"]["step"] for s in sittings] == [8] and sittings[0]["problems"] == 3
    third = run_cli(evaluate, runs_dir)  # the same weights again: resumed, nothing set aside
    assert "drawn from other weights" not in third.stdout + third.stderr
    assert len(list(out_dir.glob("other-weights-*"))) == 1


def test_a_full_disk_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import harness.jsonl
    from harness import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "p.jsonl"))

    monkeypatch.setattr(harness.jsonl, "write_jsonl_atomic", full)
    monkeypatch.setattr(sys, "argv", ["ladir-bench", "data", "--task", "countdown3", "--limit", "2",
                                      "--out", str(tmp_path / "p.jsonl")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "no space left" in message and "p.jsonl" in message and len(message.splitlines()) == 1
    assert not (tmp_path / "p.jsonl").exists()
