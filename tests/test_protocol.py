"""The shared protocol end to end through the CLI: config validation, AR-SFT training that learns,
resumable evaluation, and the bad-input contract (exact resumption after SIGKILL: test_faults.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.config import load_config, parse_override
from harness.errors import BadInput
from harness.methods import BUILTIN_METHODS
from tests.conftest import AR_SFT_MICRO, copy_run, micro_args, run_cli


def test_config_layers_and_validation(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("train: {lr: 0.002}\nmodel: {hidden_size: 64}\n")
    config = load_config("tiny", config_file, [parse_override("train.steps=7")])
    assert (config.train.lr, config.model.hidden_size, config.train.steps) == (0.002, 64, 7)
    for bad in ["train.steps=abc", "train.nonsense=1", "eval.top_p=1.5", "train.lr=-1", "model.hidden_size=30"]:
        with pytest.raises(BadInput):
            load_config("tiny", None, [parse_override(bad)])
    with pytest.raises(BadInput):
        load_config("no-such-preset")
    # YAML 1.1 reads `no` as false: on the command line it stays the word a string field expects
    assert load_config("tiny", None, [parse_override("train.mixed_precision=no")]).train.mixed_precision == "no"
    overrides = [parse_override(o) for o in ("train.gradient_checkpointing=yes", "task_options.flag=false")]
    assert overrides == [{"train": {"gradient_checkpointing": "yes"}}, {"task_options": {"flag": False}}]
    assert load_config("tiny", None, overrides[:1]).train.gradient_checkpointing is True


# micro sizes for the methods whose defaults are too large for a test; the others train as they are
MICRO_PHASE_OPTIONS = {
    "ladir": ["method_options={latent_tokens: 2, latent_dim: 4, vae_steps: 3, stage2_steps: 2, stage2_euler_steps: 2, "
              "stats_problems: 20, report_problems: 4}"],
    "ld4lg": ["method_options={vae_steps: 3, latent_tokens: 2, latent_dim: 4, stats_problems: 20, report_problems: 4, "
              "max_text_tokens: 64}"],
    "mtp": ["method_options.future_tokens=3"],
}


# every built-in method that trains (`pretrained` trains nothing), so a new one is held to it too
@pytest.mark.parametrize("method", sorted(set(BUILTIN_METHODS) - {"pretrained"}))
def test_a_runs_weights_do_not_depend_on_the_process_random_state(tmp_path, micro_base, method):
    """torch seeds its global generator from the OS at start-up: what a phase adds to the base (a VAE's
    latent queries, a reasoner's or a denoiser's projections, MTP's heads) is initialised from the run's
    seed, so two processes given one seed train the same weights, every phase of every method."""
    from safetensors.torch import load_file

    from harness.train.checkpoint import final_checkpoint

    finals = []
    for process_state in (1, 2):
        runs = tmp_path / f"process{process_state}"
        shutil.copytree(micro_base / "_base", runs / "_base")
        torch.manual_seed(process_state)  # what another process would start from
        run_cli(["train", "--method", method, "--task", "countdown3", "--run", "r", "--steps", "4",
                 *micro_args(*MICRO_PHASE_OPTIONS.get(method, []))], runs)
        phases = sorted(p for p in (runs / "r").iterdir() if (p / "checkpoints").is_dir())
        finals.append({f"{phase.name}/{file.relative_to(final_checkpoint(phase)[1])}/{key}": value
                       for phase in phases for file in sorted(final_checkpoint(phase)[1].rglob("*.safetensors"))
                       for key, value in load_file(str(file)).items()})
    assert finals[0] and finals[0].keys() == finals[1].keys()
    assert [k for k in finals[0] if not torch.equal(finals[0][k], finals[1][k])] == []


def test_the_base_checkpoint_is_keyed_by_everything_that_shapes_it(tmp_path):
    from harness.context import RunContext

    def base_dir(*overrides):
        config = load_config("tiny", None, [parse_override(o) for o in overrides])
        return RunContext(config, tmp_path / "run", tmp_path).backbone.directory

    reference = base_dir()
    for shaping in ["train.weight_decay=0.1", "train.warmup_steps=7", "train.grad_clip=0.5", "train.base_steps=5",
                    "train.base_lr=0.01", "train.batch_size=8", "model.hidden_size=64", "task_options.train_size=9"]:
        assert base_dir(shaping) != reference, shaping
    for fine_tuning_only in ["train.steps=5", "train.lr=0.01", "train.log_every=1", "method_options.beta=0.1"]:
        assert base_dir(fine_tuning_only) == reference, fine_tuning_only


def test_a_run_saved_before_a_config_field_existed_resumes_and_a_changed_one_is_refused(tmp_path):
    import yaml

    from harness.runs import create_run

    def config(*overrides):
        return load_config("tiny", None, [parse_override(o) for o in ["method=ar-sft", *overrides]])

    _, ctx = create_run(config(), "r", tmp_path)
    saved = yaml.safe_load((ctx.run_dir / "config.yaml").read_text())
    del saved["train"]["grad_accum_steps"]  # as written by code older than the field
    (ctx.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    create_run(config(), "r", tmp_path)  # the missing field is its default: the same run
    with pytest.raises(BadInput, match="differs in: train.weight_decay"):
        create_run(config("train.weight_decay=0.5"), "r", tmp_path)


def test_ar_sft_loss_falls(runs_dir):
    run_cli(["train", "--method", "ar-sft", "--task", "countdown3", "--run", "learn", "--steps", "60",
             *micro_args("train.lr=3e-3")], runs_dir)
    log = [json.loads(line) for line in (runs_dir / "learn" / "sft" / "log.jsonl").read_text().splitlines()]
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert [r["step"] for r in log] == list(range(1, 61))
    # A checkpoint folder is a Hugging Face model folder with its tokenizer: loadable from one path.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = sorted((runs_dir / "learn" / "sft" / "checkpoints").glob("step-*"))[-1] / "model"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Use 3 4 5 to make 12.", return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


def test_eval_writes_results_and_resumes_without_duplicates(runs_dir, ar_sft_micro):
    train = [*AR_SFT_MICRO, "--run", "ev"]
    copy_run(ar_sft_micro, "ar-sft", runs_dir, "ev")  # as `run_cli(train, runs_dir)` trains it
    # `train` again on the finished run returns its checkpoint without needing (or retraining) the base
    (base_phase,) = (runs_dir / "_base").glob("*/base")
    shutil.rmtree(base_phase)
    run_cli(train, runs_dir)
    assert not base_phase.exists()
    first = run_cli(["eval", "--run", "ev", "--k", "3", "--limit", "4", "--json"], runs_dir)
    metrics = json.loads(first.stdout)
    assert metrics["n_problems"] == 4 and metrics["n_samples"] == 12 and "pass@1" in metrics
    (out_dir,) = (runs_dir / "ev" / "results" / "countdown3-test").iterdir()
    samples_path = out_dir / "samples.jsonl"
    rows = [json.loads(line) for line in samples_path.read_text().splitlines()]
    assert {"task_id", "completion", "passed", "seconds"} <= rows[0].keys()
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["versions"]["torch"] and manifest["config"]["method"] == "ar-sft"
    assert len(manifest["problems_sha256"]) == 64 and manifest["checkpoint"]["phase"] == "sft"
    assert manifest["checker"]["checker"].startswith("ast whitelist") and "options" in manifest["checker"]
    assert manifest["checkpoint"]["step"] == 8 and len(manifest["checkpoint"]["sha256"]) == 64
    assert manifest["git_revision"] is None or len(manifest["git_revision"]) == 40
    assert metrics["checkpoint"] == manifest["checkpoint"] and metrics["train_minutes"] >= 0
    (sitting,) = manifest["sampled_by"]  # the code that drew the samples, kept when a re-run only re-scores
    assert sitting["problems"] == 4 and sitting["git_revision"] == manifest["git_revision"]
    run_cli(["eval", "--run", "ev", "--k", "3", "--limit", "4"], runs_dir)
    assert json.loads((out_dir / "manifest.json").read_text())["sampled_by"] == [sitting]
    # A re-score that changes no figure writes nothing: files written by older code (its revision, a
    # knob list without a knob added since, read as its default) stay as they are; a figure the code
    # now computes otherwise is rewritten, with the revision that computed it
    older_manifest = {**json.loads((out_dir / "manifest.json").read_text()), "git_revision": "0" * 40}
    older_metrics = json.loads((out_dir / "metrics.json").read_text())
    del older_metrics["knobs"]["top_p"]
    (out_dir / "manifest.json").write_text(json.dumps(older_manifest))
    (out_dir / "metrics.json").write_text(json.dumps(older_metrics))
    held = {name: (out_dir / name).read_bytes() for name in ("manifest.json", "metrics.json")}
    run_cli(["eval", "--run", "ev", "--k", "3", "--limit", "4"], runs_dir)
    assert {name: (out_dir / name).read_bytes() for name in held} == held
    (out_dir / "metrics.json").write_text(json.dumps({**older_metrics, "pass@1": 2.0}))
    run_cli(["eval", "--run", "ev", "--k", "3", "--limit", "4"], runs_dir)
    assert json.loads((out_dir / "metrics.json").read_text())["pass@1"] == metrics["pass@1"]
    assert json.loads((out_dir / "manifest.json").read_text())["git_revision"] == manifest["git_revision"]

    # Simulate an interruption: the last problem only half written. The re-run drops and redoes it.
    lines = samples_path.read_text().splitlines()
    samples_path.write_text("\n".join(lines[:-1]) + "\n")
    again = json.loads(run_cli(["eval", "--run", "ev", "--k", "3", "--limit", "6", "--json"], runs_dir).stdout)
    rows_after = [json.loads(line) for line in samples_path.read_text().splitlines()]
    assert again["n_samples"] == 18 and len(rows_after) == 18
    assert [s["problems"] for s in json.loads((out_dir / "manifest.json").read_text())["sampled_by"]] == [4, 3]
    assert len({(r["task_id"], i % 3) for i, r in enumerate(rows_after)}) == 18
    assert rows_after[:9] == rows[:9], "finished problems are kept as they were"
    # Same seed, same samples: a fresh evaluation elsewhere reproduces the completions.
    assert [r["completion"] for r in rows_after[9:12]] == [r["completion"] for r in rows[9:12]]


def test_bad_input_gets_one_line_and_exit_2(runs_dir, tmp_path):
    malformed = tmp_path / "bad.jsonl"
    malformed.write_text('{"task_id": "countdown3/test/0", "completion": "x"}\n{not json\n')
    unknown_id = tmp_path / "unknown.jsonl"
    unknown_id.write_text('{"task_id": "countdown3/test/999999", "completion": "x"}\n')
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    wrong_types = tmp_path / "types.jsonl"
    wrong_types.write_text('{"task_id": "countdown3/test/0", "completion": 42}\n')
    bad_yaml, unknown_key = tmp_path / "broken.yaml", tmp_path / "unknown.yaml"
    bad_yaml.write_text("train: [1\n")
    unknown_key.write_text("train: {stepz: 3}\n")
    cases = [
        (["score", "--task", "countdown3", "--samples", str(binary)], "binary.jsonl:1"),
        (["data", "--task", "countdown3", "--data-file", str(binary)], "binary.jsonl"),
        (["score", "--task", "countdown3", "--samples", str(empty)], "no samples"),
        (["score", "--task", "countdown3", "--samples", str(wrong_types)], "completion"),
        (["train", "--method", "ar-sft", "--task", "countdown3", "--config", str(bad_yaml)], "invalid YAML"),
        (["train", "--method", "ar-sft", "--task", "countdown3", "--config", str(unknown_key)], "stepz"),
        (["train", "--method", "ar-sft", "--task", "countdown3", "--preset", "huge"], "unknown preset"),
        (["eval", "--run", "x", "--k", "0"], "--k"),
        (["data", "--task", "nope"], "unknown task"),
        (["score", "--task", "countdown3", "--samples", str(malformed)], "bad.jsonl:2"),
        (["score", "--task", "countdown3", "--samples", str(unknown_id)], "unknown task_id"),
        (["score", "--task", "countdown3", "--samples", str(tmp_path / "missing.jsonl")], "not found"),
        (["train", "--method", "nope", "--task", "countdown3"], "unknown method"),
        (["train", "--method", "ar-sft", "--task", "countdown3", "--set", "train.lr=abc"], "train.lr"),
        (["eval", "--run", "never-trained"], "no run named"),
        (["score", "--task", "gsm8k", "--samples", str(unknown_id), "--data-file", str(tmp_path / "gsm.jsonl")], "not found"),
        # usage errors, raised by the click that the installed typer carries (typer._click) or by click
        (["nonsense"], "No such command"),
        (["eval", "--run", "x", "--k", "abc"], "--k"),
        (["train", "--bogus", "1"], "No such option: --bogus"),
        (["eval"], "--run"),
        (["train", "--method", "mtp", "--task", "countdown3", "--set", "method_options.nonsense=1"], "nonsense"),
        (["train", "--method", "ar-sft", "--task", "countdown3", "--set", "task_options.trian_size=5"], "trian_size"),
        (["train", "--method", "ar-sft", "--task", "countdown3", "--set", "task_options.train_size=many"], "train_size"),
        (["data", "--task", "countdown3", "--data-file", str(malformed)], "bad.jsonl:2: not JSON"),
        (["data", "--task", "humaneval", "--data-file", str(malformed)], "no option 'data_file'"),
    ]
    for args, needle in cases:
        result = run_cli(args, runs_dir, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (runs_dir / "ar-sft-countdown3-tiny-seed0").exists(), "a rejected config left a run directory behind"

    # Offline (as CI may be, forced here): a hub model that is not cached fails at once, before any run exists
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.time()
    missing = run_cli(["train", "--method", "pretrained", "--model", "someorg/not-cached-model", "--task", "countdown3",
                       "--run", "offline"], runs_dir, check=False, env=offline)
    assert missing.returncode == 2 and "not in the Hugging Face cache" in missing.stderr and "--model" in missing.stderr
    assert time.time() - started < 60 and not (runs_dir / "offline").exists()


def test_data_then_score_round_trip(tmp_path, runs_dir):
    problems_file = tmp_path / "problems.jsonl"
    run_cli(["data", "--task", "countdown4", "--split", "test", "--limit", "5", "--out", str(problems_file)], runs_dir)
    problems = [json.loads(line) for line in problems_file.read_text().splitlines()]
    assert len(problems) == 5 and {"task_id", "prompt", "numbers", "target"} <= problems[0].keys()
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as handle:
        for problem in problems:
            handle.write(json.dumps({"task_id": problem["task_id"], "completion": problem["reference"]}) + "\n")
            handle.write(json.dumps({"task_id": problem["task_id"], "completion": "The answer is 1+1."}) + "\n")
    result = run_cli(["score", "--task", "countdown4", "--samples", str(samples), "--k", "1,2", "--json"], runs_dir)
    metrics = json.loads(result.stdout)
    assert metrics["task"] == "countdown4" and metrics["n_problems"] == 5 and metrics["n_samples"] == 10
    assert metrics["pass@1"] == pytest.approx(0.5) and metrics["pass@2"] == pytest.approx(1.0)
    assert metrics["diversity"] == pytest.approx(1.0)
    verdicts = [json.loads(line) for line in (tmp_path / "samples.verdicts.jsonl").read_text().splitlines()]
    assert [v["passed"] for v in verdicts] == [True, False] * 5
    assert "warning" in result.stderr  # the other test problems have no samples


@pytest.mark.slow
def test_smollm2_gguf_loads_and_runs_a_forward_pass():
    from harness.backbone import RESERVED_TOKENS, load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    assert all(token in tokenizer.get_vocab() for token in RESERVED_TOKENS)
    ids = tokenizer("The answer is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()


def test_ablate_grid_then_table_and_plot(tmp_path, runs_dir):
    from tests.conftest import MICRO_SETTINGS

    settings = {s.split("=", 1)[0]: s.split("=", 1)[1] for s in MICRO_SETTINGS}
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({
        "name": "g", "method": "ar-sft", "task": "countdown3", "preset": "tiny",
        "settings": {**settings, "train.steps": 4},
        "train_grid": {"train.lr": [0.001, 0.003]},
        "eval": {"k": 2, "limit": 2},
        "eval_grid": {"temperature": [0.5, 1.0]},
    }))  # JSON is YAML
    result = run_cli(["ablate", "--grid", str(grid)], runs_dir)
    metrics_files = sorted(runs_dir.rglob("metrics.json"))
    assert len(metrics_files) == 4
    assert "| g-lr0.001" in result.stdout and "pass@1" in result.stdout
    again = run_cli(["ablate", "--grid", str(grid)], runs_dir)  # everything done: resumes to the same table
    assert again.stdout == result.stdout

    latex = run_cli(["table", str(runs_dir), "--format", "latex"], runs_dir).stdout
    assert "\\begin{tabular}" in latex and "g-lr0.003" in latex
    csv_rows = run_cli(["table", str(runs_dir), "--format", "csv"], runs_dir).stdout.strip().splitlines()
    assert len(csv_rows) == 5
    png = tmp_path / "pak.png"
    run_cli(["plot", str(runs_dir), "--kind", "pass-at-k", "--out", str(png)], runs_dir)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli(["plot", str(runs_dir), "--kind", "step-scaling"], runs_dir, check=False)
    assert bad.returncode == 2 and "step-scaling" in bad.stderr

    bad_grid = tmp_path / "bad.yaml"
    bad_grid.write_text("train_grid: {train.lr: 0.1}\n")
    result = run_cli(["ablate", "--grid", str(bad_grid)], runs_dir, check=False)
    assert result.returncode == 2 and "non-empty list" in result.stderr


def test_method_registry_is_lazy_and_takes_entry_point_plugins(tmp_path, micro_base):
    listing = subprocess.run([sys.executable, "-c", "import sys, harness.methods as m; print(m.method_names()); "
                              "print(any(k.split('.')[0] in ('torch', 'transformers', 'ladir', 'baselines') for k in sys.modules))"],
                             capture_output=True, text=True, check=True)
    names, imported_heavy = listing.stdout.splitlines()
    assert names == str(["ar-sft", "coconut", "ladir", "ld4lg", "mdm", "mtp", "pretrained"]) and imported_heavy == "False"

    # harness/README.md's example method ("Adding a method"), as another package declaring it in the
    # entry-point group, runs under the protocol end to end.
    readme = (Path(__file__).parents[1] / "harness" / "README.md").read_text()
    example = readme.split("# my_package/greedy_sft.py\n", 1)[1].split("```", 1)[0]
    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "greedy_sft.py").write_text(example)
    dist = tmp_path / "my_package-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ladir_bench.methods]\ngreedy-sft = my_package.greedy_sft:GreedySft\n")
    env = {**os.environ, "COLUMNS": "250", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    listed = run_cli(["methods"], env=env)
    assert "greedy-sft" in listed.stdout and "AR fine-tuning, greedy decoding." in listed.stdout
    runs = tmp_path / "runs"
    shutil.copytree(micro_base / "_base", runs / "_base")
    run_cli(["train", "--method", "greedy-sft", "--task", "countdown3", "--run", "p", "--steps", "4", *micro_args()],
            runs, env=env)
    metrics = json.loads(run_cli(["eval", "--run", "p", "--k", "2", "--limit", "2", "--json"], runs, env=env).stdout)
    assert metrics["method"] == "greedy-sft" and metrics["n_samples"] == 4
    samples = (runs / "p" / "results" / "countdown3-test").glob("*/samples.jsonl")
    rows = [json.loads(line) for line in next(samples).read_text().splitlines()]
    assert rows[0]["completion"] == rows[1]["completion"]  # greedy: both samples of a problem agree


def test_samples_do_not_depend_on_which_problems_share_a_call(runs_dir, ar_sft_micro):
    copy_run(ar_sft_micro, "ar-sft", runs_dir, "g")
    completions = []
    for batch_size in ("2", "100"):  # k = 2: one problem per sample() call, then all five in one call
        metrics = json.loads(run_cli(["eval", "--run", "g", "--k", "2", "--limit", "5", "--json",
                                      "--knob", f"batch_size={batch_size}"], runs_dir).stdout)
        (out_dir,) = [d for d in (runs_dir / "g" / "results" / "countdown3-test").iterdir()
                      if json.loads((d / "metrics.json").read_text())["knobs"]["batch_size"] == int(batch_size)]
        completions.append([json.loads(line)["completion"] for line in (out_dir / "samples.jsonl").read_text().splitlines()])
        assert metrics["n_samples"] == 10
    assert completions[0] == completions[1]


def test_training_minutes_add_up_the_finished_phases_and_a_phase_of_no_steps_trained_none(tmp_path):
    """`train_minutes`: each DONE marker's elapsed seconds; a phase run for 0 steps (LaDiR without
    stage 2) has no last log row and counts 0, and a phase without a timing leaves it unknown."""
    from harness.evaluate.provenance import training_minutes
    from harness.train.checkpoint import DONE_MARKER

    def done(phase: str, record: dict) -> None:
        (tmp_path / phase).mkdir()
        (tmp_path / phase / DONE_MARKER).write_text(json.dumps(record))

    done("vae", {"steps": 10, "last": {"step": 10, "elapsed_s": 90.0}})
    done("stage1", {"steps": 20, "last": {"step": 20, "elapsed_s": 30.0}})
    done("stage2", {"steps": 0, "last": None})
    assert training_minutes(tmp_path) == 2.0
    done("older", {"steps": 5, "last": {"step": 5}})  # written before elapsed_s was recorded
    assert training_minutes(tmp_path) is None


def test_the_command_list_gives_each_command_its_first_paragraph_on_one_line():
    """`ladir-bench --help` lists each command by its docstring's first paragraph, wrapped to the terminal
    rather than broken where the docstring's lines break."""
    import inspect

    from harness.cli import app

    listing = run_cli(["--help"], env={**os.environ, "COLUMNS": "1000"}).stdout
    for command in app.registered_commands:
        first = " ".join(inspect.cleandoc(command.callback.__doc__).split("\n\n")[0].split())
        assert first in listing, (command.name, first)


def test_a_process_records_the_revision_it_started_from_not_a_commit_made_while_it_ran(monkeypatch):
    """A long `reproduce` or `eval` outlives commits to its checkout: its manifests must name the code it
    imported. `ladir-bench` reads the revision as it starts; a commit afterwards does not change it."""
    from harness import cli, revision
    from harness.evaluate.provenance import manifest

    heads, calls = iter(["a" * 40, "b" * 40]), []

    def fake_git(args, **kwargs):
        calls.append(args[1])
        out = next(heads) if args[1] == "rev-parse" else ""
        return subprocess.CompletedProcess(args, 0, stdout=out + "\n", stderr="")

    revision.git_revision.cache_clear()
    monkeypatch.setattr(revision.subprocess, "run", fake_git)
    monkeypatch.setattr(sys, "argv", ["ladir-bench", "tasks"])
    try:
        cli.main()  # the revision is read here, as the process starts: HEAD is "a..."
        assert calls == ["rev-parse", "status"]
        # HEAD is "b..." from now on; what the process records is still the revision it started from
        assert revision.git_revision() == {"git_revision": "a" * 40, "git_dirty": False}
        context = SimpleNamespace(config=SimpleNamespace(to_dict=dict), seed=0,
                                  backbone=SimpleNamespace(objective="ar"), device="cpu")
        assert manifest(context, {})["git_revision"] == "a" * 40
    finally:
        revision.git_revision.cache_clear()
