"""The committed results regenerate: `table` and `plot` read every results folder, each metrics
file's figures appear in the regenerated table, and every folder's README opens with the table its
`table.py` (or results/reference_table.py) prints from the committed files."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.evaluate.report import (
    _series,
    find_metrics,
    load_frame,
    plot,
    render_table,
)

RESULTS = Path(__file__).parents[1] / "results"
FOLDERS = sorted(p for p in RESULTS.iterdir() if p.is_dir() and any(p.rglob("*metrics.json")))


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_committed_results_regenerate_their_table_and_plot(folder, tmp_path):
    files = find_metrics([folder])
    frame = load_frame([folder])
    assert len(frame) == len(files)
    table = render_table(frame, "markdown")
    for path in files:
        metrics = json.loads(path.read_text())
        # the table rounds half to even (pandas), Python's format the binary value: accept either
        shown = {f"{100 * metrics['pass@1']:.1f}", f"{float(np.round(100 * metrics['pass@1'], 1)):.1f}"}
        assert any(text.rstrip("0").rstrip(".") in table for text in shown), (path, table)
    assert plot(frame, "pass-at-k", tmp_path / "pass-at-k.png").stat().st_size > 1000


def test_a_run_sampled_two_ways_plots_as_two_curves(tmp_path):
    """The same run's step sweep with and without `reencode`: two labelled curves, not one zigzag."""
    files = sorted((RESULTS / "ladir-steps-countdown4").glob("g4-vae2x.k10.steps*.metrics.json"))
    frame = load_frame(files)
    series = dict(_series(frame, "steps"))
    assert set(series) == {"g4-vae2x", "g4-vae2x reencode=True"}
    assert sorted(series["g4-vae2x"]["steps"]) == [1, 5, 10, 30]
    assert sorted(series["g4-vae2x reencode=True"]["steps"]) == [1, 2, 3, 5, 10, 30]
    assert "reencode" in render_table(frame, "markdown")
    assert plot(frame, "step-scaling", tmp_path / "steps.png").stat().st_size > 1000


def test_the_default_engine_is_named_in_the_table():
    """metrics.json names the engine only when it is not `hf`; a table holding both says hf, not nan."""
    frame = load_frame([RESULTS / "vllm-cpu"])
    assert sorted(frame["engine"]) == ["hf"] * 3 + ["vllm"] * 5
    assert "| smolhf-cd3 | pretrained | hf " in render_table(frame, "markdown")


def test_a_decoding_knob_is_a_column_where_one_method_is_evaluated_at_several(tmp_path):
    """LaDiR at two solvers gets a `solver` column; a knob set alike within each method (LaDiR's
    `cache` True, MDM's `cache` "none") gets none, so ordinary tables keep their shape."""
    def write(name: str, method: str, knobs: dict, pass1: float) -> None:
        record = {"run": name.split(".")[0], "method": method, "task": "countdown4", "split": "test", "k": 10,
                  "knobs": knobs, "pass@1": pass1, "n_problems": 2, "n_samples": 20}
        (tmp_path / f"{name}.metrics.json").write_text(json.dumps(record))

    write("ladir-a.euler", "ladir", {"steps": 2, "solver": "euler", "cache": True}, 0.25)
    write("ladir-a.heun", "ladir", {"steps": 2, "solver": "heun", "cache": True}, 0.35)
    write("mdm-a.default", "mdm", {"steps": 32, "cache": "none", "threshold": 0.0}, 0.05)
    frame = load_frame([tmp_path])
    assert "solver" in frame.columns and "cache" not in frame.columns and "threshold" not in frame.columns
    table = render_table(frame, "markdown")
    assert "heun" in table and "euler" in table
    write("mdm-a.fast", "mdm", {"steps": 32, "cache": "dual", "threshold": 0.9}, 0.04)
    frame = load_frame([tmp_path])
    assert {"cache", "threshold"} <= set(frame.columns)
    assert dict(_series(frame, "steps")).keys() == {"ladir-a solver=euler", "ladir-a solver=heun",
                                                    "mdm-a cache=none threshold=0.0", "mdm-a cache=dual threshold=0.9"}


# Made before the manifest recorded the problem set's sha256 (the 2026-11-23 CPU runs; the LaDiR
# metrics carry their checkpoint's sha256, the AR-SFT one does not). Their manifests still name the
# config, device and package versions. Nothing may be added to this list.
PARTIAL_PROVENANCE = {
    "baselines-countdown4/cd4-ar.k100", "ladir-countdown4/f1b-t05-tf.k100", "ladir-countdown4/f1-dec.k100",
    *(f"ladir-steps-countdown4/f1b-t05-tf.k10.steps{s}" for s in (1, 5, 10, 30)),
    *(f"ladir-guidance-countdown4/f1b-t05-tf.k10.gamma{g}" for g in ("0.3", "0.5", "1.0")),
}


def run_config(run: str) -> list[Path]:
    """The committed resolved config of a run: `configs/RUN.yaml` or `RUN.config.yaml` in a results folder
    (or a folder within one, as a table `reproduce --out` wrote beside another)."""
    return [*RESULTS.glob(f"**/configs/{run}.yaml"), *RESULTS.glob(f"*/{run}.config.yaml")]


def test_every_committed_metrics_file_has_its_manifest_and_config():
    """Provenance: beside `X.metrics.json` sits `X.manifest.json` (code revision, checkpoint sha256,
    problem set, packages, device, checker); one name per run: the file's name starts with the run
    name its metrics record, and the run's resolved config carries the same name."""
    for path in sorted(RESULTS.rglob("*metrics.json")):
        stem = path.name[: -len("metrics.json")]
        manifest = path.with_name(f"{stem}manifest.json")
        assert manifest.is_file(), f"{path} has no manifest"
        record = json.loads(manifest.read_text())
        assert record["config"] and record["versions"]["torch"] and record["device"], manifest
        run = json.loads(path.read_text())["run"]
        assert stem.startswith(f"{run}."), f"{path}: its name does not start with its run's, {run!r}"
        assert run_config(run), f"{path}: no committed config for run {run!r} (configs/{run}.yaml)"
        if f"{path.parent.name}/{stem.rstrip('.')}" in PARTIAL_PROVENANCE:
            continue
        assert len(record["git_revision"]) == 40 and "git_dirty" in record, manifest
        assert len(record["problems_sha256"]) == 64, manifest
        metrics = json.loads(path.read_text())
        pretrained = record["config"]["method"] == "pretrained"  # no trained checkpoint: the model is named
        assert pretrained or len((record.get("checkpoint") or metrics["checkpoint"])["sha256"]) == 64, manifest


TABLE_FOLDERS = sorted(p.parent for p in RESULTS.glob("*/table.py"))


def first_table(readme: str) -> tuple[str, str]:
    """The README's first content after its title (must be a table) and that table's lines."""
    lines = readme.splitlines()
    assert lines[0].startswith("# "), "a results README starts with its title"
    body = [line for line in lines[1:] if line.strip()]
    table = []
    for line in lines[lines.index(body[0]):]:
        if not line.startswith("|"):
            break
        table.append(line)
    return body[0], "\n".join(table)


# A folder `reproduce --out` wrote has no table.py: results/reference_table.py prints its table.md's table
REPRODUCED_FOLDERS = sorted(p.parent for p in RESULTS.glob("*/reproduce.json") if not (p.parent / "table.py").exists())


@pytest.mark.parametrize("folder", TABLE_FOLDERS + REPRODUCED_FOLDERS, ids=lambda p: p.name)
def test_each_readme_opens_with_the_table_its_command_prints(folder, capsys, monkeypatch):
    """No figure in a reference table is typed by hand: README.md's first content is exactly what
    `python results/FOLDER/table.py`, or `python results/reference_table.py results/FOLDER`, prints from
    the committed files."""
    script, argv = ((folder / "table.py", [str(folder / "table.py")]) if folder in TABLE_FOLDERS
                    else (RESULTS / "reference_table.py", [str(RESULTS / "reference_table.py"), str(folder)]))
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out.strip()
    first, table = first_table((folder / "README.md").read_text())
    assert first.startswith("|"), f"{folder.name}/README.md does not open with its table"
    assert table == printed, f"{folder.name}/README.md's table differs from its command's output"


def test_every_reference_folder_has_a_command_that_prints_its_table():
    assert {p.name for p in TABLE_FOLDERS + REPRODUCED_FOLDERS} >= {
        "countdown-reference", "countdown3-reference", "stage2-reference", "step-scaling-reference",
        "diversity-reference", "reference-scale"}


def test_the_index_names_every_results_folder():
    index = (RESULTS / "README.md").read_text()
    for folder in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        assert f"`{folder.name}/`" in index, f"results/README.md does not list {folder.name}/"


def test_the_front_page_shows_the_committed_headline_table():
    """README.md's results table is the reference Countdown table (results/countdown-reference/README.md's,
    itself printed from the files that `reproduce` wrote)."""
    _, headline = first_table((RESULTS / "countdown-reference" / "README.md").read_text())
    assert headline in (RESULTS.parent / "README.md").read_text()


def test_the_decoding_table_says_how_an_mdm_run_was_trained_where_it_differs(tmp_path):
    """MDM runs under one decoder: one trained with MGDM's recipe, or over fewer target positions, is named
    so, the default one is not."""
    decoding = runpy.run_path(str(RESULTS / "reference_table.py"))["decoding"]
    (tmp_path / "decoding").mkdir()
    for run, recipe, decoder, length in (("mdm-a", "llada", "low_confidence", 96),
                                         ("mdm-b", "mgdm", "low_confidence", 96), ("mdm-c", "mgdm", "recipe", 96),
                                         ("mdm-d", "llada", "low_confidence", 48)):
        stem = tmp_path / "decoding" / f"{run}.countdown3-val.k10"
        metrics = {"run": run, "method": "mdm", "split": "val", "knobs": {"steps": 32, "decoder": decoder},
                   "pass@1": 0.05, "samples_per_s": 2.0}
        stem.with_name(stem.name + ".metrics.json").write_text(json.dumps(metrics))
        manifest = {"config": {"method_options": {"recipe": recipe, "base": "masked-diffusion", "gen_length": length}}}
        stem.with_name(stem.name + ".manifest.json").write_text(json.dumps(manifest))
    rows = {line.split("`")[-2]: line for line in decoding(tmp_path).splitlines()[2:]}
    assert "trained with recipe=mgdm, decoder=low_confidence" in rows["mdm-b.countdown3-val.k10"]
    assert "trained with" not in rows["mdm-a.countdown3-val.k10"]
    assert "trained with recipe=mgdm, its recipe's decoder (easy_first)" in rows["mdm-c.countdown3-val.k10"]
    assert "trained with gen_length=48, decoder=low_confidence" in rows["mdm-d.countdown3-val.k10"]


def test_step_validity_reads_the_problems_of_the_evaluation_it_is_given(tmp_path, capsys, monkeypatch):
    """The script behind the committed step-validity files scores samples against their own evaluation's
    problems (task, seed and options from the manifest beside them), not Countdown-4's at seed 0."""
    from tasks import get_task

    problems = get_task("countdown3", seed=1).problems("test")[:3]
    answer = problems[0]["reference"].rsplit(" The answer is ", 1)[1]
    rows = [{"task_id": p["task_id"], "completion": p["reference"], "passed": True} for p in problems]
    rows.append({"task_id": problems[0]["task_id"], "completion": "1+1=3. The answer is " + answer, "passed": True})
    evaluation = tmp_path / "countdown3-test" / "k1"
    evaluation.mkdir(parents=True)
    (evaluation / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (evaluation / "manifest.json").write_text(json.dumps(
        {"task": "countdown3", "split": "test", "config": {"seed": 1, "task_options": {}}}))
    monkeypatch.setattr(sys, "argv", ["step_validity.py", str(evaluation / "samples.jsonl")])
    runpy.run_path(str(RESULTS / "ladir-countdown4" / "step_validity.py"), run_name="__main__")
    figures = json.loads(capsys.readouterr().out)
    assert figures["samples"] == 4 and figures["steps"] == 7
    assert figures["step_valid"] == pytest.approx(6 / 7)  # the references' six steps, not the made-up one
    assert figures["chain_solves"] == pytest.approx(3 / 4) and figures["passed_without_chain"] == pytest.approx(1 / 4)
