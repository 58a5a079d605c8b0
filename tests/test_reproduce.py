"""`ladir-bench reproduce`: the shipped grids plan without training, runs are shared between tables, a
micro-scale table comes out in the paper's layout, a second call trains and samples nothing, and its
output folder alone (the runs gone) rebuilds the table without retraining; bad requests are refused
in one line; and the code tasks' training file that the code table trains on."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from harness.config import build_dataclass
from harness.errors import BadInput
from harness.tools.ablation import RESTORED, Grid, union_of_products
from harness.tools.reproduce import load_scale, load_table, reproduce, table_names
from tests.conftest import MICRO_SETTINGS

PAPER_TABLES = {"countdown", "step-scaling", "diversity", "stage2", "vae", "math", "code"}
MICRO = {
    "settings": {**dict(s.split("=", 1) for s in MICRO_SETTINGS), "train.steps": 4},
    "method_settings": {"ladir": {"method_options.vae_steps": 4, "method_options.stage2_steps": 2,
                                  "method_options.stage2_euler_steps": 2, "method_options.latent_tokens": 2,
                                  "method_options.latent_dim": 4, "method_options.stats_problems": 20,
                                  "method_options.report_problems": 4}},
    "eval": {"k": 2, "limit": 4},
}


def _run_names(text: str) -> set[str]:
    """The run column of a --dry-run plan."""
    return {line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("| ") and "-seed" in line.split("|")[1]}


@pytest.mark.parametrize("scale", ["tiny", "reference", "paper"])
def test_every_shipped_grid_plans_without_training(tmp_path, scale):
    assert set(table_names()) == PAPER_TABLES
    runs = tmp_path / "runs"
    for table in table_names():
        text = reproduce(table, scale, dry_run=True, runs_root=runs).text
        names = _run_names(text)
        assert names and f"{len(names)} runs" in text, (table, text)
        assert "already done: 0 of" in text and "compute left:" in text
        if load_table(table).data_files:  # planned, and said to need the user's files
            assert "not runnable yet" in text and "--data" in text
    assert not runs.exists()  # planning wrote nothing


def test_an_eval_grid_listed_as_mappings_is_the_union_of_their_products():
    """The countdown grid's LaDiR samplers: the defaults and one other setting, each once, in order."""
    def points(grid):
        return union_of_products(grid, "eval_grid")

    assert points([{}, {"reencode": [True], "steps": [1]}]) == [{}, {"reencode": True, "steps": 1}]
    assert points([{"steps": [1, 2]}, {"steps": [2, 10]}]) == [{"steps": 1}, {"steps": 2}, {"steps": 10}]
    assert points({"steps": [5, 10]}) == [{"steps": 5}, {"steps": 10}]
    with pytest.raises(BadInput, match=r"eval_grid\[1\]\.steps"):
        points([{}, {"steps": 1}])
    # and a grid file may write it so (the typed loader once took only a mapping)
    grid = build_dataclass(Grid, {"name": "g", "eval_grid": [{"steps": [1]}, {"gamma_max": [0.3]}]}, "g.yaml")
    assert grid.eval_grid == [{"steps": [1]}, {"gamma_max": [0.3]}]
    with pytest.raises(BadInput, match="expected a mapping"):
        build_dataclass(Grid, {"name": "g", "eval_grid": "steps"}, "g.yaml")


def test_tables_asking_for_the_same_run_share_it(tmp_path):
    def plan(table):
        return _run_names(reproduce(table, "tiny", dry_run=True, runs_root=tmp_path).text)

    countdown, steps, diversity, stage2, vae = (plan(t) for t in ("countdown", "step-scaling", "diversity", "stage2",
                                                                   "vae"))
    ladir4 = {name for name in countdown if name.startswith("ladir-countdown4-seed0-")}
    assert len(ladir4) == 1 and ladir4 <= steps and ladir4 <= diversity and ladir4 <= stage2 and ladir4 <= vae
    # AR-SFT's run and MDM's from its own family's base; the table's second MDM row (from the AR base) is its own
    shared = {n for n in countdown if n.startswith(("ar-sft-countdown4", "mdm-countdown4"))}
    assert len(shared) == 2 + 1 and len(shared - steps) == 1
    assert len(stage2) == 2  # with stage 2 (the shared run) and without
    # ...which differ only after the VAE: the first trains it (300 + 300 steps), the second adopts it
    text = reproduce("stage2", "tiny", dry_run=True, runs_root=tmp_path).text
    assert "new (600 steps)" in text and "new (300 steps, vae shared)" in text and "compute left: 1200" in text
    # the VAE sweeps list the default value of each knob: one run, not four
    assert len(vae) == 1 + 3 + 3 + 2 + 2
    # a second seed adds runs of its own; another scale is other runs
    two_seeds = _run_names(reproduce("countdown", "tiny", seeds=2, dry_run=True, runs_root=tmp_path,
                                               methods=["ladir"], tasks=["countdown4"]).text)
    assert ladir4 < two_seeds and len(two_seeds) == 2
    assert not ladir4 & _run_names(reproduce("countdown", "reference", dry_run=True, runs_root=tmp_path).text)


def test_the_reference_scale_gives_the_headline_methods_three_seeds_unless_told(tmp_path):
    def seeds(**options):
        names = _run_names(reproduce("countdown", "reference", dry_run=True, runs_root=tmp_path,
                                     tasks=["countdown4"], **options).text)
        return {method: sorted(int(n.rsplit("-seed", 1)[1].split("-")[0]) for n in names if n.startswith(method + "-"))
                for method in ("ar-sft", "ladir", "mdm", "coconut", "mtp", "ld4lg")}

    # MDM's two rows (its own family's base, the AR base) each get the headline seeds
    assert seeds() == {"ar-sft": [0, 1, 2], "ladir": [0, 1, 2], "mdm": [0, 0, 1, 1, 2, 2], "coconut": [0], "mtp": [0],
                       "ld4lg": [0]}
    assert set(map(tuple, seeds(seeds=1).values())) == {(0,), (0, 0)}  # --seeds sets every method's
    # --method-seeds gives the methods it names their own count, more or fewer, whatever --seeds says
    assert seeds(seeds=1, method_seeds={"ar-sft": 3}) == {"ar-sft": [0, 1, 2], "ladir": [0], "mdm": [0, 0],
                                                           "coconut": [0], "mtp": [0], "ld4lg": [0]}
    assert seeds(method_seeds={"ladir": 1, "mtp": 2}) == {"ar-sft": [0, 1, 2], "ladir": [0], "mdm": [0, 0, 1, 1, 2, 2],
                                                          "coconut": [0], "mtp": [0, 1], "ld4lg": [0]}
    # the plan (and so the table's rows) keeps the grid's method order whatever the seed counts
    plan = reproduce("countdown", "reference", dry_run=True, runs_root=tmp_path, tasks=["countdown4"], seeds=1,
                     method_seeds={"ar-sft": 3, "mdm": 2}).text
    runs = [line.split("|")[1].strip() for line in plan.splitlines() if line.startswith("| ") and "-seed" in line]
    assert list(dict.fromkeys(name.split("-countdown4")[0] for name in runs)) == [
        "ar-sft", "ladir", "coconut", "ld4lg", "mdm", "mtp"]
    with pytest.raises(BadInput, match="--method-seeds names nope"):
        seeds(method_seeds={"nope": 2})
    with pytest.raises(BadInput, match="N >= 1"):
        seeds(method_seeds={"ladir": 0})


def test_bf16_precision_plans_other_runs_into_another_folder(tmp_path):
    """`--precision bf16` trains every run under autocast: other run names (the setting is in their
    config), another default folder, the plan saying so and costing steps at the measured speedup."""
    options = dict(dry_run=True, runs_root=tmp_path, tasks=["countdown4"], methods=["ar-sft", "mtp"], seeds=1)
    fp32, bf16 = reproduce("countdown", "reference", **options), reproduce("countdown", "reference", precision="bf16",
                                                                              **options)
    assert len(_run_names(bf16.text)) == 2 and not _run_names(fp32.text) & _run_names(bf16.text)
    assert (fp32.out_dir.name, bf16.out_dir.name) == ("countdown-reference-countdown4",
                                                      "countdown-reference-countdown4-bf16")
    assert "--scale reference --precision bf16:" in bf16.text and "--precision" not in fp32.text
    scale = load_scale("reference")
    rate = scale.seconds_per_step["mtp"] / scale.bf16_train_speedup["mtp"]
    assert f"mtp {rate:.3g} s/step (scale estimate / its bf16 speedup" in bf16.text
    with pytest.raises(BadInput, match="unknown precision 'fp16'"):
        reproduce("countdown", "reference", precision="fp16", **options)


def test_seeds_and_filters_shape_the_plan(tmp_path):
    text = reproduce("countdown", "tiny", seeds=3, dry_run=True, runs_root=tmp_path, methods=["ar-sft", "ladir"],
                     tasks=["countdown4"]).text
    names = _run_names(text)
    assert sorted(n.rsplit("-", 1)[0] for n in names) == sorted(
        f"{m}-countdown4-seed{s}" for m in ("ar-sft", "ladir") for s in range(3))
    with pytest.raises(BadInput, match="no method nope"):
        reproduce("countdown", "tiny", dry_run=True, runs_root=tmp_path, methods=["nope"])


def test_knob_selects_part_of_the_sampling_grid_and_never_writes_over_more_of_it(tmp_path):
    """`--knob mdm.steps=8,16` plans MDM's evaluations at those step counts only and leaves the other
    methods' grids whole; an unscoped knob selects in every grid that sets it; what the grids lack is
    refused; a part of a grid goes to its own folder and may not replace a table of more of it."""
    from harness.tools.ablation import plan_grid
    from harness.tools.reproduce import load_scale, resolve_grid

    def planned_steps(knobs, methods=None):
        grid = resolve_grid("step-scaling", load_table("step-scaling"), "tiny", load_scale("tiny"), 1, {},
                            methods, ["countdown3"], knobs=knobs)
        return {plan.cell["method"]: [e.knobs.get("steps") for e in plan.evals] for plan in plan_grid(grid)}

    whole = planned_steps(None)
    assert whole == {"ladir": [1, 2, 5, 10, 30, 50], "mdm": [8, 16, 32, 64], "ar-sft": [None]}
    assert planned_steps({"mdm.steps": ["8", "16"]}) == {**whole, "mdm": [8, 16]}
    assert planned_steps({"steps": ["2", "5"]}, ["ladir"]) == {"ladir": [2, 5]}
    for knobs, methods, message in (
            ({"steps": ["8"]}, None, "steps=8 leaves ladir no sampling setting"),
            ({"mdm.steps": ["7"]}, None, "has no steps 7 \\(its values: 8, 16, 32, 64\\)"),
            ({"mdm.cfg_scale": ["1"]}, None, "sets no cfg_scale \\(it sets: steps\\)"),
            ({"coconut.steps": ["8"]}, None, "samples no method coconut")):
        with pytest.raises(BadInput, match=message):
            planned_steps(knobs, methods)
    # A point that leaves the knob unset is selected by the method's default (the countdown grid's MDM
    # rows: LLaDA's decoder, threshold 0.0 by default, and the 0.9 threshold); numbers compare as numbers
    def planned_mdm(knobs):
        grid = resolve_grid("countdown", load_table("countdown"), "tiny", load_scale("tiny"), 1, {}, ["mdm"],
                            ["countdown3"], knobs=knobs)
        evals = [[e.knobs for e in plan.evals] for plan in plan_grid(grid)]
        assert len(evals) == 2 and evals[0] == evals[1]  # MDM's two bases sample at the same points
        return evals[0]

    assert planned_mdm(None) == [{}, {"threshold": 0.9}]
    assert planned_mdm({"mdm.threshold": ["0"]}) == [{}]
    assert planned_mdm({"threshold": ["0.90"]}) == [{"threshold": 0.9}]
    with pytest.raises(BadInput, match="has no threshold 0.5 \\(its values: 0.0, 0.9\\)"):
        planned_mdm({"mdm.threshold": ["0.5"]})
    grid = resolve_grid("countdown", load_table("countdown"), "tiny", load_scale("tiny"), 1, {}, ["ladir"],
                        ["countdown3"], knobs={"ladir.reencode": ["true"]})
    assert [e.knobs for plan in plan_grid(grid) for e in plan.evals] == [{"reencode": True, "steps": 1}]

    part = reproduce("step-scaling", "tiny", dry_run=True, runs_root=tmp_path, tasks=["countdown3"],
                     methods=["mdm"], knobs={"mdm.steps": ["8", "16"]})
    assert part.out_dir == tmp_path / "step-scaling-tiny-countdown3-mdm.steps8-16"
    assert ": 1 runs, 2 evaluations" in part.text, part.text
    whole_table = tmp_path / "whole"
    whole_table.mkdir()
    (whole_table / "reproduce.json").write_text(json.dumps({"runs": [], "results": ["a", "b", "c"]}))
    with pytest.raises(BadInput, match="holds a table of the whole sampling grid"):
        reproduce("step-scaling", "tiny", runs_root=tmp_path, tasks=["countdown3"], methods=["mdm"],
                  knobs={"mdm.steps": ["8"]}, out_dir=whole_table)


def test_an_ablation_runs_on_another_task_with_the_same_runs_as_the_main_table(tmp_path):
    """`--tasks` may name a table's `other_tasks`: the step-scaling ablation on Countdown-3 plans the very
    runs the Countdown table trains there; two tasks make one column group each."""
    def plan(table, tasks):
        return _run_names(reproduce(table, "tiny", dry_run=True, runs_root=tmp_path, methods=["ladir", "ar-sft"],
                                    tasks=tasks).text)

    on_cd3 = plan("step-scaling", ["countdown3"])
    assert on_cd3 == plan("countdown", ["countdown3"]) and all("-countdown3-" in name for name in on_cd3)
    assert len(plan("step-scaling", ["countdown3", "countdown4"])) == 4
    with pytest.raises(BadInput, match="no task nope .*countdown3, countdown4, countdown5"):
        plan("step-scaling", ["nope"])
    with pytest.raises(BadInput, match="no task countdown3"):  # a table without other tasks keeps its own
        reproduce("stage2", "tiny", dry_run=True, runs_root=tmp_path, tasks=["countdown3"])
    both = reproduce("step-scaling", "tiny", runs_root=tmp_path / "runs", methods=["ar-sft"],
                     tasks=["countdown3", "countdown4"], overrides=MICRO).text
    header = next(line for line in both.splitlines() if line.startswith("| Method"))
    assert "Countdown-3 P@1" in header and "Countdown-4 P@1" in header
    assert "Accuracy vs. denoising steps (Countdown-4, Countdown-3)" in both  # the plan's order, as the columns


@pytest.mark.slow
def test_micro_reproduce_prints_the_paper_layout_then_resumes(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    first = reproduce("countdown", "tiny", runs_root=runs, methods=["ar-sft", "ladir"], tasks=["countdown3"],
                      overrides=MICRO)
    table = first.text
    header = next(line for line in table.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method", "sampler", "CD-3 P@1", "CD-3 P@2", "CD-3 Div.", "paper (Countdown planning table, LLaMA 3.1 8B)"]
    ar_row = next(line for line in table.splitlines() if line.startswith("| AR-SFT"))
    ladir_row, reencoded = [line for line in table.splitlines()[:8] if line.startswith("| LaDiR")]
    assert "46.7" in ar_row and "76.6" in ladir_row  # the paper's figures in the reference column
    # LaDiR sampled as the paper does, then with the harness's reencode + 1 Euler step, paired the same way
    assert "the paper's" in ladir_row and "reencode, 1 Euler step" in reencoded and "76.6" not in reencoded
    assert "Δ" in reencoded
    assert "[" in ar_row and "Δ" in ladir_row and "Δ" not in ar_row  # intervals; LaDiR paired against AR-SFT
    assert "chain-valid@1" in table and "uses given numbers" in table  # the diagnostics table under it
    assert "own steps exact" in table and "AE ceiling" in table
    out = first.out_dir
    assert out == runs / "countdown-tiny-countdown3"  # a task selection is a table of its own
    for name in ("table.md", "table.tex", "table.csv", "cells.csv", "reproduce.json", "pass-at-k.png"):
        assert (out / name).is_file(), name
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    cells = (out / "cells.csv").read_text().splitlines()
    # 3 evaluations (AR-SFT; LaDiR with two samplers) x 6 cells (no AE ceiling: not LD4LG)
    assert cells[0].startswith("method,reencode,task,metric,mean,lo,hi") and len(cells) == 1 + 3 * 6
    record = json.loads((out / "reproduce.json").read_text())
    assert len(record["runs"]) == 2 and len(record["results"]) == 3
    copies = sorted(path.name for path in (out / "evaluations").iterdir())  # provenance beside the table
    assert len(copies) == 9 and all(name.startswith(tuple(record["runs"])) for name in copies)
    for folder in record["results"]:  # RUN/results/TASK-SPLIT/kK, under the runs folder
        run, _, task_split, setting = Path(folder).parts
        copy = out / "evaluations" / f"{run}.{task_split}.{setting}"
        metrics = json.loads((runs / folder / "metrics.json").read_text())
        assert json.loads(Path(f"{copy}.metrics.json").read_text()) == metrics
        with gzip.open(f"{copy}.samples.jsonl.gz", "rb") as packed:  # every checked sample, too
            assert packed.read() == (runs / folder / "samples.jsonl").read_bytes()
    assert sorted(path.stem for path in (out / "configs").iterdir()) == sorted(record["runs"])

    samples = sorted(runs.glob("*/results/*/*/samples.jsonl"))
    assert len(samples) == 3
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in samples}

    def no_training(*args, **kwargs):
        raise AssertionError("a second reproduce trained a step")

    monkeypatch.setattr("harness.train.trainer.Trainer.optimizer_step", no_training)
    again = reproduce("countdown", "tiny", runs_root=runs, methods=["ar-sft", "ladir"], tasks=["countdown3"],
                      overrides=MICRO, fmt="csv")
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in samples} == before  # nothing resampled
    assert (out / "table.csv").read_text() == again.text + "\n" and again.text.startswith("Method,sampler,CD-3 P@1")
    assert (out / "table.md").read_text().strip() == table.strip()
    plan = reproduce("countdown", "tiny", runs_root=runs, methods=["ar-sft", "ladir"], tasks=["countdown3"],
                     overrides=MICRO, dry_run=True).text
    assert "already done: 2 of 2 runs trained, 3 of 3 evaluations" in plan and "compute left: 0 training steps" in plan
    # An evaluation counts as the planned one only where it sampled the run's final weights and the
    # planned problems: not while the last phase is unfinished (an `eval` of the stage-1 weights of a run
    # still training), not on other problems (a grid's other data file)
    ladir_done = next(runs.glob("ladir-*/stage2/DONE"))
    ar_manifest = next(runs.glob("ar-sft-*/results/*/*/manifest.json"))
    manifest_text = ar_manifest.read_text()
    ladir_done.rename(ladir_done.with_name("DONE.aside"))
    ar_manifest.write_text(json.dumps({**json.loads(manifest_text), "problems_sha256": "0" * 64}))
    plan = reproduce("countdown", "tiny", runs_root=runs, methods=["ar-sft", "ladir"], tasks=["countdown3"],
                     overrides=MICRO, dry_run=True).text
    assert "0 of 3 evaluations" in plan
    ladir_done.with_name("DONE.aside").rename(ladir_done)
    ar_manifest.write_text(manifest_text)

    # The output folder alone (as committed, the runs gone) rebuilds the same table: its runs are
    # restored from the copies, with their samples, and not retrained (optimizer_step still refuses)
    committed, elsewhere = tmp_path / "committed", tmp_path / "fresh-runs"
    shutil.copytree(out, committed)
    plan = reproduce("countdown", "tiny", runs_root=elsewhere, methods=["ar-sft", "ladir"], tasks=["countdown3"],
                     overrides=MICRO, dry_run=True, out_dir=committed).text
    assert plan.count("restored (evaluated by an earlier call), not retrained") == 2
    assert "compute left: 0 training steps" in plan
    assert not elsewhere.exists()  # a plan writes nothing
    abandoned = elsewhere / ".restore-1-killed"  # what a restore killed mid-way left, a day ago and more
    (abandoned / "ar-sft").mkdir(parents=True)
    os.utime(abandoned, (time.time() - 25 * 3600,) * 2)
    rebuilt = reproduce("countdown", "tiny", runs_root=elsewhere, methods=["ar-sft", "ladir"], tasks=["countdown3"],
                        overrides=MICRO, out_dir=committed)
    assert rebuilt.text.strip() == table.strip()
    assert (committed / "cells.csv").read_text() == (out / "cells.csv").read_text()
    assert sorted(elsewhere.glob(f"*/{RESTORED}")) == sorted(elsewhere / run / RESTORED for run in record["runs"])
    assert not list(elsewhere.glob("*/*/checkpoints")) and not list(elsewhere.glob(".restore-*"))
    for folder in record["results"]:  # the same samples, restored where the runs had them
        assert (elsewhere / folder / "samples.jsonl").read_bytes() == (runs / folder / "samples.jsonl").read_bytes()

    # A call planning only some of those runs may not write its table over that record (exit 2, one line)
    with pytest.raises(BadInput, match="holds a table of runs this call does not plan"):
        reproduce("countdown", "tiny", runs_root=elsewhere, methods=["ar-sft"], tasks=["countdown3"],
                  overrides=MICRO, out_dir=committed)
    # Copies that do not hold what the grid asks (here a larger limit) restore nothing: the plan shows the
    # runs to train, and a run restored before, asked for more, is retrained from the start, not mixed
    larger = {**MICRO, "eval": {**MICRO["eval"], "limit": 5}}
    plan = reproduce("countdown", "tiny", runs_root=tmp_path / "third-runs", methods=["ar-sft", "ladir"],
                     tasks=["countdown3"], overrides=larger, dry_run=True, out_dir=committed).text
    assert "restored" not in plan and "already done: 0 of 2 runs trained" in plan
    monkeypatch.undo()  # training allowed again
    ar_run = next(run for run in record["runs"] if run.startswith("ar-sft"))
    again = reproduce("countdown", "tiny", runs_root=elsewhere, methods=["ar-sft"], tasks=["countdown3"],
                      overrides=larger, out_dir=tmp_path / "larger")
    assert not (elsewhere / ar_run / RESTORED).exists() and (elsewhere / ar_run / "sft").is_dir()
    rows = [json.loads(line) for line in next((elsewhere / ar_run).glob("results/*/*/samples.jsonl")).open()]
    assert len(rows) == 5 * MICRO["eval"]["k"] and "AR-SFT" in again.text  # 5 problems, sampled anew


def test_the_countdown_table_decodes_mdm_as_llada_and_with_a_confidence_threshold(tmp_path):
    """MDM's rows: from its own family's base and from the AR base, each decoded with LLaDA's low-confidence
    remasking (the paper's reference figures beside the first) and with Fast-dLLM's 0.9 threshold, in base
    and decoder columns that a table without MDM leaves out."""
    result = reproduce("countdown", "tiny", runs_root=tmp_path, methods=["mdm"], tasks=["countdown3"],
                       overrides=MICRO)
    lines = result.text.splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")][:4] == ["Method", "MDM base", "MDM decoder", "CD-3 P@1"]
    rows = [line for line in lines[:8] if line.startswith("| MDM")]
    assert len(rows) == 4
    assert all("masked-diffusion" in row for row in rows[:2]) and all("AR (the others' base)" in row for row in rows[2:])
    assert "low-confidence" in rows[0] and "LLaDA 8B SFT" in rows[0]
    assert "threshold 0.9" in rows[1] and not any("LLaDA 8B SFT" in row for row in rows[1:])
    record = json.loads((result.out_dir / "reproduce.json").read_text())
    configs = {run: (result.out_dir / "configs" / f"{run}.yaml").read_text() for run in record["runs"]}
    assert sorted("base: ar\n" in text for text in configs.values()) == [False, True]
    metrics = [json.loads((tmp_path / folder / "metrics.json").read_text()) for folder in record["results"]]
    assert sorted(m["knobs"]["threshold"] for m in metrics) == [0.0, 0.0, 0.9, 0.9]
    assert (result.out_dir / "cells.csv").read_text().startswith("method,method_options.base,threshold,task,metric")
    # The plan of a second seed charges each of its evaluations at the rate measured here at the same
    # knobs (the threshold's cost is not the default decoder's), where a method without any finished
    # evaluation falls back to the scale's estimate for its default knobs
    seconds: dict[float, list[float]] = {}
    for m in metrics:
        seconds.setdefault(m["knobs"]["threshold"], []).append(1 / m["samples_per_s"])
    rates = {threshold: sum(values) / len(values) for threshold, values in seconds.items()}
    plan = reproduce("countdown", "tiny", runs_root=tmp_path, methods=["mdm", "ar-sft"], tasks=["countdown3"],
                     overrides=MICRO, seeds=2, dry_run=True).text
    estimate = next(line for line in plan.splitlines() if "samples to draw and check" in line)
    assert f"mdm {rates[0.0]:.3g} s/sample (wall, from finished evaluations here at these knobs)" in estimate
    assert f"mdm threshold=0.9 {rates[0.9]:.3g} s/sample (wall, from finished evaluations here at these knobs)" \
        in estimate
    assert "ar-sft 0.012 s/sample (scale estimate, at the method's default knobs)" in estimate


def test_refusals_are_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    def refused(*args: str) -> str:
        """`ladir-bench reproduce ARGS` through the real entry point, here: it must exit 2 with one line."""
        monkeypatch.setattr("sys.argv", ["ladir-bench", "reproduce", *args, "--runs-dir", str(tmp_path)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main()
        err = capsys.readouterr().err
        assert done.value.code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    assert "unknown table 'nope'" in refused("nope", "--dry-run")
    for table, names in (("math", ("gsm8k-train", "gsm8k-test", "math500-test")),
                         ("code", ("code-train", "humanevalplus-test", "mbppplus-test"))):
        message = refused(table)
        assert all(f"--data {name}=PATH" in message for name in names), message
    assert "not found" in refused("code", "--data", f"code-train={tmp_path / 'none.jsonl'}", "--data",
                                  "humanevalplus-test=x", "--data", "mbppplus-test=y")
    assert "takes no data file x" in refused("countdown", "--data", "x=y")
    assert "unknown scale 'huge'" in refused("countdown", "--scale", "huge", "--dry-run")
    assert "--method-seeds 'ladir' is not METHOD=N" in refused("countdown", "--method-seeds", "ladir", "--dry-run")
    assert "--method-seeds 'ladir=x' is not METHOD=N" in refused("countdown", "--method-seeds", "ladir=x", "--dry-run")
    assert not (tmp_path / "countdown-tiny").exists()


def test_paper_scale_runs_only_as_a_plan_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the paper scale may run")
    with pytest.raises(BadInput, match="--dry-run"):
        reproduce("countdown", "paper", runs_root=tmp_path)
    assert "ladir-countdown4" in reproduce("countdown", "paper", dry_run=True, runs_root=tmp_path).text


# ------------------------------------------------------------------------------- the code training file
def _code_rows(n: int) -> list[dict]:
    return [{"prompt": f'def add{i}(a, b):\n    """Return a plus b."""\n',
             "reasoning": ["Both arguments are numbers", f"Adding them with + gives the sum for case {i}."],
             "solution": f"def add{i}(a, b):\n    return a + b\n"} for i in range(n)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_code_training_file_gives_train_and_val_splits(tmp_path):
    from tasks import get_task, split_reasoning
    from tasks.code import extract_code

    train_file = _write_jsonl(tmp_path / "code-train.jsonl", _code_rows(20))
    task = get_task("humaneval", train_file=str(train_file))
    assert task.splits == ("train", "val", "test")
    train, val = task.problems("train"), task.problems("val")
    assert (len(train), len(val)) == (18, 2) and len(task.problems("test")) == 164
    assert train[0]["task_id"] == "humaneval/train/0" and val[0]["task_id"] == "humaneval/val/0"
    sentences, answer = split_reasoning(train[0]["reference"])
    assert sentences == ["Both arguments are numbers.", "Adding them with + gives the sum for case 0."]
    assert answer.startswith("The answer is")
    program, full = extract_code(train[0], train[0]["reference"])  # the checker takes the solution back out
    assert full and program == "def add0(a, b):\n    return a + b\n" and train[0]["entry_point"] == "add0"
    assert len(get_task("humaneval", train_file=str(train_file), val_size=5).problems("val")) == 5
    assert get_task("humaneval").splits == ("test",)  # without the file: the test set alone

    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "solution": "s"}])
    with pytest.raises(BadInput, match="row 0 lacks field.*reasoning"):
        get_task("humaneval", train_file=str(bad)).problems("train")
    marked = _write_jsonl(tmp_path / "marked.jsonl", [{**_code_rows(1)[0], "solution": "# the answer is 3\n"}])
    with pytest.raises(BadInput, match="may not appear"):
        get_task("humaneval", train_file=str(marked)).problems("train")


def test_a_method_trains_on_the_code_training_file(tmp_path):
    from harness.config import load_config, parse_override
    from harness.runs import create_run

    train_file = _write_jsonl(tmp_path / "code-train.jsonl", _code_rows(20))
    micro = [s for s in MICRO_SETTINGS if not s.startswith("task_options.")]
    overrides = [parse_override(s) for s in [*micro, "method=ar-sft", "task=humaneval", "train.steps=2",
                                             "train.base_steps=2", f"task_options.train_file={train_file}"]]
    method, ctx = create_run(load_config("tiny", None, overrides), "code", tmp_path / "runs")
    method.train()
    assert (ctx.run_dir / "sft" / "DONE").is_file()
    # and the code table plans it from the user's files
    text = reproduce("code", "tiny", dry_run=True, runs_root=tmp_path / "plans", methods=["ar-sft"],
                     data_files={"code-train": str(train_file), "humanevalplus-test": str(train_file),
                                 "mbppplus-test": str(train_file)}).text
    assert "not runnable yet" not in text and "ar-sft-humanevalplus-seed0-" in text


@pytest.mark.slow
def test_demo_runs_the_countdown_grid_at_a_small_budget(tmp_path, capsys):
    from harness.tools.demo import run_demo

    runs = tmp_path / "runs"
    folders = run_demo("countdown3", limit=2, k=2, steps=4, base_steps=4, runs_root=runs)
    assert len(folders) == 3  # AR-SFT once; LaDiR as the paper samples it and with reencode + 1 Euler step
    table = capsys.readouterr().out
    assert "| AR-SFT" in table and "| LaDiR" in table and "CD-3 P@1" in table and "paper (" in table
    assert list(runs.glob("ladir-countdown3-seed0-*/probe/stage2-step*.json"))
    assert (runs / "demo-countdown3" / "pass-at-k.png").read_bytes()[:4] == b"\x89PNG"
