"""The reference tables of results/, built from the committed files alone.

A folder `ladir-bench reproduce --out` wrote opens its README.md with the first table of its table.md,
which this module prints (`--curves`: the validation curves of its runs, from curves/; `--decoding`:
the decoding settings evaluated on its runs, from decoding/):

    python results/reference_table.py results/stage2-reference [--curves | --decoding]

A folder assembled from single runs has a `table.py` that names its rows (metrics files and a label)
and calls `main`: it prints the table that opens the folder's README.md, and with `--plot` writes the
folder's plot through `ladir-bench plot`'s own code. tests/test_results.py checks that every README's
first table is what its command prints, so no figure in a table is typed by hand.

Figures: Pass@k in percent (one decimal, as `ladir-bench table`), diversity as recorded; a
`RUN.k100....step-validity.json` beside a metrics file (results/ladir-countdown4/step_validity.py)
adds the validity of the samples' reasoning steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for harness.evaluate.report

from harness.evaluate.report import load_frame, plot

RESULTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    file: str  # the metrics file, relative to the table's folder
    label: str  # what the row is, in words


def record(folder: Path, row: Row) -> dict:
    """One row's figures: the metrics file, its manifest's config, its step-validity file if any."""
    path = folder / row.file
    metrics = json.loads(path.read_text())
    stem = path.name[: -len(".metrics.json")]
    manifest = json.loads(path.with_name(f"{stem}.manifest.json").read_text())
    validity_path = path.with_name(f"{stem}.step-validity.json")
    validity = json.loads(validity_path.read_text()) if validity_path.is_file() else {}
    checkpoint = metrics.get("checkpoint") or manifest.get("checkpoint") or {}
    options = manifest["config"].get("method_options") or {}
    shown = path.resolve().relative_to(RESULTS).as_posix()[: -len(".metrics.json")]
    return {"metrics": metrics, "config": manifest["config"], "validity": validity, "file": shown,
            "checkpoint": f"{checkpoint['phase']}@{checkpoint['step']}" if checkpoint else "", "options": options}


# `extra` figures shown in percent, as Pass@k: MGDM's criterion, the copy diagnostic, LD4LG's ceiling
RATES = ("chain_valid@1", "chain_valid@10", "uses_given_numbers", "reconstruction_ceiling")


def percent(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{round(100 * value, digits):.{digits}f}"


def number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def markdown(header: list[str], rows: list[list[str]], left: int) -> str:
    """A markdown table; the first `left` columns left-aligned, the rest (figures) right-aligned."""
    rule = [":---" if i < left else "---:" for i in range(len(header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def pass_at_k_table(folder: Path, rows: list[Row], ks=(1, 10, 100), extra: tuple[tuple[str, str], ...] = (),
                    validity: bool = False, budget: bool = False) -> str:
    """One row per evaluation: Pass@k and diversity, then any `extra` (header, metrics key) figures,
    with the training budget and the step validity of the samples when asked."""
    header = ["row", "results file"]
    if budget:
        header += ["fine-tuning steps", "VAE steps", "Euler steps"]
    header += [*(f"Pass@{k}" for k in ks), "diversity", *(name for name, _ in extra)]
    if validity:
        header += ["steps valid %", "chain solves %", "answer follows chain %"]
    lines = []
    for row in rows:
        r = record(folder, row)
        m, knobs = r["metrics"], r["metrics"].get("knobs", {})
        cells = [row.label, f"`{r['file']}`"]
        if budget:
            cells += [str(r["config"]["train"]["steps"]), number(r["options"].get("vae_steps")) or "-",
                      number(knobs.get("steps")) or "-"]
        cells += [*(percent(m.get(f"pass@{k}")) for k in ks), number(m.get("diversity"))]
        cells += [str(m.get(key, "hf")) if key == "engine"
                  else percent(m.get(key)) if key in RATES else number(m.get(key)) for _, key in extra]
        if validity:
            v = r["validity"]
            cells += [percent(v.get("step_valid")), percent(v.get("chain_solves"), 2),
                      percent(v.get("answer_follows_chain"))]
        lines.append(cells)
    return markdown(header, lines, left=2)


def sweep_table(folder: Path, series: list[tuple[str, list[str]]], knob: str, figures: list[str]) -> str:
    """Figures against one sampling knob (`steps` or `gamma_max`): a row per (series, figure), a column
    per knob value; each series is a label and its metrics files."""
    cells: dict[tuple[str, str], dict[float, str]] = {}
    values: set[float] = set()
    for label, files in series:
        for file in files:
            m = json.loads((folder / file).read_text())
            x = float(m["knobs"][knob])
            values.add(x)
            for figure in figures:
                shown = number(m[figure]) if figure == "diversity" else percent(m[figure])
                cells.setdefault((label, figure), {})[x] = shown
    columns = sorted(values)
    header = ["series", "figure", *(f"{knob} {x:g}" for x in columns)]
    lines = [[label, figure.replace("pass", "Pass"), *(cells[(label, figure)].get(x, "") for x in columns)]
             for label, _ in series for figure in figures]
    return markdown(header, lines, left=2)


def reproduced_table(folder: Path) -> str:
    """The table `ladir-bench reproduce TABLE --out FOLDER` wrote in the paper's layout: table.md's
    first table (its notes and diagnostics follow it there)."""
    lines = (folder / "table.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def validation_curves(folder: Path) -> str:
    """One row per run of `folder/curves/` (`ladir-bench curve`): validation Pass@1 (percent) at each
    checkpoint of the phases its curve follows."""
    rows = []
    for path in sorted((folder / "curves").glob("*.curve.json")):
        curve = json.loads(path.read_text())
        points = ", ".join(f"{row['phase']}@{row['step']}: {100 * row['pass@1']:.1f}" for row in curve["rows"])
        knobs = "".join(f", {knob}" for knob in curve.get("knobs") or [])  # `curve` writes them as KEY=VALUE
        setting = f"{curve['split']}, k = {curve['k']}, {curve['limit']} problems{knobs}"
        rows.append(f"| {curve['run']} | {setting} | {points} |")
    return "\n".join(["| run | evaluated on | Pass@1 at each checkpoint |", "| :--- | :--- | :--- |", *rows])


# MDM's decoding knobs a setting names where they differ from the method's defaults (`steps` has its column)
MDM_DECODING = ("decoder", "gen_length", "block_length", "cache", "refresh", "threshold", "temperature")


def setting(metrics: dict, trained: dict) -> tuple[str, str]:
    """(setting in words, velocity evaluations per block or unmasking steps) of one decoding evaluation;
    `trained` is its run's `method_options` (an MDM run trained otherwise than by default says how)."""
    knobs = metrics.get("knobs") or {}
    if metrics["method"] == "ladir":
        extras = [*(["reencode"] if knobs.get("reencode") else []),
                  *([] if knobs.get("write_reasoning", True) else ["no reasoning text"])]
        return ", ".join([knobs["solver"], *extras]), f"{knobs['steps']} NFE / block"
    if metrics["method"] == "mdm":
        from baselines.mdm import RECIPE_DECODER, MdmOptions, MdmSampleKnobs  # only here: it imports torch

        defaults = {key: getattr(MdmSampleKnobs(), key) for key in MDM_DECODING}
        changed = [f"{key}={knobs[key]}" for key, default in defaults.items() if knobs.get(key, default) != default]
        trained = {**vars(MdmOptions()), **trained}
        training = [f"trained with {key}={trained[key]}" for key in ("recipe", "base", "gen_length")
                    if trained[key] != getattr(MdmOptions(), key)]
        if trained["recipe"] != MdmOptions().recipe and knobs.get("decoder", "recipe") == "recipe":
            changed.insert(0, f"its recipe's decoder ({RECIPE_DECODER[trained['recipe']]})")
        return ", ".join(training + changed) or "defaults", f"{knobs['steps']} steps"
    return ("greedy" if knobs.get("temperature") == 0 else "sampled"), "1 pass / token"


RATES_SHOWN = ("pass@10", "chain_valid@1", "uses_given_numbers")


def decoding(folder: Path) -> str:
    """Each decoding setting's Pass@1 and speed on a reference folder's runs (`folder/decoding/`, copies of
    `ladir-bench eval` metrics at k = 10), its time per sample against AR-SFT's at the same k where an
    AR-SFT evaluation is among them."""
    files = sorted((folder / "decoding").glob("*.metrics.json"))
    evaluations = [json.loads(path.read_text()) for path in files]
    ar = next((m["samples_per_s"] for m in evaluations if m["method"] == "ar-sft"), None)
    order = {"ar-sft": 0, "ladir": 1, "mdm": 2}
    rows = []
    pairs = sorted(zip(files, evaluations, strict=True),
                   key=lambda p: (order.get(p[1]["method"], 3), p[1]["split"] != "val", p[0].name))
    for path, m in pairs:
        manifest = json.loads(path.with_name(path.name.replace(".metrics.json", ".manifest.json")).read_text())
        words, cost = setting(m, manifest["config"]["method_options"])
        lo, hi = (m.get("intervals") or {}).get("pass@1", (None, None))
        interval = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else ""
        ratio = f"{ar / m['samples_per_s']:.2f}" if ar else "—"
        shares = [f"{100 * m[key]:.1f}" if key in m else "" for key in RATES_SHOWN]
        figures = [f"{100 * m['pass@1']:.1f}{interval}", *shares, f"{m['samples_per_s']:.1f}", ratio]
        rows.append(f"| {m['method']} | {m['split']} | {words} | {cost} | " + " | ".join(figures)
                    + f" | `{path.name[: -len('.metrics.json')]}` |")
    header = ("| method | split | setting | cost | Pass@1 [95%] | Pass@10 | chain_valid@1 | uses given numbers "
              "| samples/s | time per sample / AR-SFT's | file |")
    return "\n".join([header, "| :--- | :--- | :--- | :--- |" + " ---: |" * 6 + " :--- |", *rows])


def main(folder: Path, table: str, plot_kind: str, plot_files: list[str], plot_figures: tuple[str, ...] = ()) -> None:
    """Print `table`; with --plot, write `plot_kind`.png from `plot_files` (only the Pass@k columns in
    `plot_figures`, when given, so a crowded plot keeps one curve per series)."""
    parser = argparse.ArgumentParser(
        description=f"Print the reference table of {folder.name}/ (its README's first table).")
    parser.add_argument("--plot", action="store_true", help=f"also write {folder.name}/{plot_kind}.png")
    args = parser.parse_args()
    print(table)
    if args.plot:
        frame = load_frame([folder / f for f in plot_files])
        if plot_figures:
            frame = frame.drop(columns=[c for c in frame.columns if c.startswith("pass@") and c not in plot_figures])
        out = plot(frame, plot_kind, folder / f"{plot_kind}.png")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the table that opens the README of a folder that "
                                                 "`ladir-bench reproduce --out FOLDER` wrote.")
    parser.add_argument("folder", type=Path, help="e.g. results/stage2-reference")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--curves", action="store_true", help="the validation curves of its runs (curves/) instead")
    shown.add_argument("--decoding", action="store_true", help="each decoding setting's Pass@1 and speed (decoding/)")
    args = parser.parse_args()
    wanted = args.folder / ("curves" if args.curves else "decoding" if args.decoding else "table.md")
    if not wanted.exists():
        why = ("no `ladir-bench curve` output there" if args.curves else "no decoding evaluations there"
               if args.decoding else "not a folder that `ladir-bench reproduce --out` wrote?")
        print(f"{wanted}: not found ({why})", file=sys.stderr)
        sys.exit(2)
    print(validation_curves(args.folder) if args.curves else decoding(args.folder) if args.decoding
          else reproduced_table(args.folder))
