"""Paper-style tables and plots from metrics.json files: Pass@k / chain_valid@k / diversity tables
(each rate with its 95% interval where metrics.json carries one) and the accuracy-vs-denoising-steps
(step scaling), Pass@k and accuracy-vs-sampling-compute curves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import BadInput
from harness.evaluate.metrics import COUNTS

IDENTITY_COLUMNS = ["run", "method", "engine", "task", "split", "k", "steps", "init_noise", "gamma_max",
                    "temperature", "cfg_scale", "reencode"]
# Decoding knobs a method is often evaluated at several of (LaDiR's solver, whether it writes its
# reasoning and the scale of its guidance; MDM's decoder, blocks, cache and threshold): a column only
# where one method's rows differ
DECODING_COLUMNS = ["solver", "write_reasoning", "guidance_sum", "decoder", "block_length", "cache", "refresh",
                    "threshold"]


NOT_RESULTS = {"_base", "_curves", "curve"}  # a shared base; `ladir-bench curve`'s copies and its evaluations


def find_metrics(paths: list[str | Path]) -> list[Path]:
    """metrics files named directly, or `metrics.json` / `*.metrics.json` under the given folders (default: runs/)."""
    found: list[Path] = []
    for raw in paths or ["runs"]:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            # `metrics.json` in run folders; `NAME.metrics.json` in committed results folders; not the
            # evaluations of a run's checkpoints (`ladir-bench curve`) below the folder, unless named
            found += sorted(p for p in path.rglob("*metrics.json")
                            if not NOT_RESULTS & set(p.relative_to(path).parts[:-1]))
        else:
            raise BadInput(f"no such results file or folder: {path}")
    if not found:
        raise BadInput(f"no metrics.json under {', '.join(map(str, paths or ['runs']))}; run `ladir-bench eval` first")
    return found


# Rates shown in percent, in this order: pass@k by k, chain_valid@k by k (Countdown), the copy diagnostic
RATE_FAMILIES = ("pass@", "chain_valid@")
SHARE_COLUMNS = ["uses_given_numbers"]
COMPUTE_COLUMNS = ["sample_tokens", "sample_flops", "train_tokens", "train_flops"]


def rate_columns(columns) -> list[str]:
    """pass@k, then chain_valid@k, each by k (pass@k.base / .plus of code after their pass@k), then shares."""
    def order(column: str):
        family = next(i for i, prefix in enumerate(RATE_FAMILIES) if column.startswith(prefix))
        k, _, part = column.split("@")[1].partition(".")
        return family, int(k), part

    rates = [c for c in columns if c.startswith(RATE_FAMILIES) and c.split("@")[1].split(".")[0].isdigit()
             and not c.endswith((".lo", ".hi"))]
    return sorted(rates, key=order) + [c for c in SHARE_COLUMNS if c in columns]


def load_frame(paths: list[str | Path]) -> pd.DataFrame:
    """One row per metrics file: its identity (run, method, task, sampling knobs; `decode` says greedy
    where the temperature is 0), its rates with `RATE.lo` / `RATE.hi` where it carries intervals, and
    its figures (diversity, compute, minutes)."""
    rows = []
    for path in find_metrics(paths):
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise BadInput(f"{path}: malformed metrics JSON ({error.msg})") from None
        knobs = metrics.pop("knobs", {}) or {}
        bounds = metrics.pop("intervals", {}) or {}
        named = {k: v for k, v in knobs.items() if k in IDENTITY_COLUMNS or k in DECODING_COLUMNS}
        row = {**named, **metrics, "path": str(path.parent)}
        row.update({f"{rate}.{end}": value for rate, pair in bounds.items() for end, value in zip(("lo", "hi"), pair)})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "engine" in frame.columns:  # metrics name the engine only when it is not the default
        frame["engine"] = frame["engine"].fillna("hf")
    if "temperature" in frame.columns or "init_noise" in frame.columns:
        frame["decode"] = [decode_kind(t, s) for t, s in zip(frame.get("temperature", pd.Series(index=frame.index)),
                                                             frame.get("init_noise", pd.Series(index=frame.index)))]
    pass_columns = rate_columns(frame.columns)
    leading = [c for c in [*IDENTITY_COLUMNS, "decode"] if c in frame.columns and frame[c].notna().any()]
    leading += [c for c in DECODING_COLUMNS if c in frame.columns and varies_within_a_method(frame, c)]
    bounds = [f"{rate}.{end}" for rate in [*pass_columns, *COUNTS] for end in ("lo", "hi") if f"{rate}.{end}" in frame.columns]
    trailing = [c for c in ("diversity", "distinct-2", "unique_answers", "n_problems", "n_samples", "samples_per_s",
                            *COMPUTE_COLUMNS, "train_minutes") if c in frame.columns]
    ceiling = [c for c in CEILING_COLUMNS if c in frame.columns]
    columns = leading + pass_columns + bounds + ceiling + trailing
    return frame[columns].sort_values([c for c in ("task", "method", "run") if c in leading])


def varies_within_a_method(frame: pd.DataFrame, column: str) -> bool:
    """Whether some method's rows differ in `column` (a knob set alike everywhere is no column)."""
    by = frame["method"] if "method" in frame.columns else pd.Series(0, index=frame.index)
    return bool((frame[column].astype(str).groupby(by).nunique() > 1).any())


def decode_kind(temperature, init_noise) -> str | None:
    """"greedy" for a deterministic decode (MGDM's protocol: one argmax decode), its own row kind: no
    sampled token (temperature 0) and, for a flow model, no sampled start (init_noise 0); else "sampled"."""
    knobs = [value for value in (temperature, init_noise) if pd.notna(value)]
    return None if not knobs else "greedy" if all(value == 0 for value in knobs) else "sampled"


# LD4LG's autoencoder bound beside its Pass@k, in the same percent: exact / checker-passing reconstructions
CEILING_COLUMNS = ["reconstruction_ceiling", "reconstruction_ceiling_pass"]

PROBE_COLUMNS = ["answer_acc_oracle", "answer_acc_shuffled", "answer_acc_noise", "pass1_generated", "pass1_swapped",
                 "block_valid", "block_arithmetic", "swapped_code_valid", "blocks_generated_mean"]


def is_probe_file(path: Path) -> bool:
    """A `ladir-bench probe` JSON (recognised by its content, whatever its name)."""
    if not (path.is_file() and path.suffix == ".json"):
        return False
    try:
        return "answer_acc_oracle" in json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, TypeError):
        return False


def load_probe_frame(paths: list[str | Path]) -> pd.DataFrame:
    """One row per `ladir-bench probe` JSON: run, checkpoint and the probe's figures."""
    rows = []
    for path in map(Path, paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise BadInput(f"{path}: not a readable probe JSON ({error})") from None
        if "answer_acc_oracle" not in record:
            raise BadInput(f"{path}: not a probe file (no answer_acc_oracle)")
        row = {"run": record["run"], "checkpoint": f"{record['checkpoint']['phase']}@{record['checkpoint']['step']}",
               "knobs": " ".join(f"{k}={v}" for k, v in sorted((record.get("knobs") or {}).items())) or "-",
               "n": record["n_problems"], **{c: record.get(c) for c in PROBE_COLUMNS}}
        row.update({f"shift {k}": v for k, v in record.get("latent_shift", {}).items()})
        row.update({f"tolerance {k}": v for k, v in record.get("decoder_tolerance", {}).items()})
        row.update({f"reach {k}": v for k, v in record.get("denoise_reach", {}).items()})
        row.update({f"reach passed {k}": v for k, v in record.get("denoise_reach_pass", {}).items()})
        row.update({f"first valid {k}": v for k, v in record.get("first_block_valid", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def render_table(frame: pd.DataFrame, fmt: str, intervals: bool = True) -> str:
    """The frame as Markdown, LaTeX or CSV, rates in percent. A rate with a 95% interval reads
    `29.0 [25.1, 33.2]` (CSV: its own `RATE.lo` / `RATE.hi` columns); `intervals=False` hides them."""
    from harness.evaluate.stats import display_format, format_interval

    shown = frame.copy()
    for column in shown.columns:
        if column in PROBE_COLUMNS or column.startswith(("shift ", "tolerance ", "reach ", "first valid ")):
            shown[column] = shown[column].astype(float).round(3)
    rates = rate_columns(shown.columns)
    bounds = [c for c in shown.columns if c.endswith((".lo", ".hi")) and c[:-3] in [*rates, *COUNTS]]
    if intervals and fmt != "csv":
        for figure in [*rates, *COUNTS]:
            if f"{figure}.lo" not in shown.columns:
                continue
            digits, scale = display_format(figure)
            shown[figure] = [
                format_interval(mean, lo, hi, digits, scale) if pd.notna(lo) and pd.notna(mean)
                else (f"{scale * mean:.{digits}f}" if pd.notna(mean) else "")
                for mean, lo, hi in zip(shown[figure], shown[f"{figure}.lo"], shown[f"{figure}.hi"])]
    if not intervals or fmt != "csv":
        shown = shown.drop(columns=bounds)
    for column in shown.columns:
        if (column in rates or column in bounds or column in CEILING_COLUMNS) \
                and pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = (100 * shown[column]).round(1)
    for column in ("diversity", "distinct-2", "unique_answers", "samples_per_s"):
        if column in shown.columns and pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = shown[column].round(3)
    for column in COMPUTE_COLUMNS:
        if column in shown.columns:
            shown[column] = shown[column].map(lambda v: f"{v:.3g}" if pd.notna(v) else "")
    if fmt == "markdown":
        return shown.to_markdown(index=False)
    if fmt == "latex":
        return shown.to_latex(index=False, float_format="%.1f")
    if fmt == "csv":
        return shown.to_csv(index=False)
    raise BadInput(f"unknown table format {fmt!r} (markdown, latex, csv)")


def _series(data: pd.DataFrame, x: str):
    """(label, rows) per curve: one per run and task, split further by any sampling setting other than
    the x axis that differs within that run (e.g. the same run sampled with and without `reencode`)."""
    for (run, _), rows in data.groupby(["run", "task"], dropna=False):
        keys = [c for c in [*IDENTITY_COLUMNS, *DECODING_COLUMNS] if c not in ("run", "task", "method", x)
                and c in rows.columns and rows[c].nunique(dropna=False) > 1]
        if not keys:
            yield str(run), rows
            continue
        for values, group in rows.groupby(keys, dropna=False):
            values = values if isinstance(values, tuple) else (values,)
            settings = [f"{key}={value}" for key, value in zip(keys, values) if pd.notna(value)]
            yield " ".join([str(run), *settings]), group


def _pass_columns(data: pd.DataFrame) -> list[str]:
    """pass@k by k (not code's .base / .plus parts), those with a value."""
    return [c for c in rate_columns(data.columns) if c.startswith("pass@") and "." not in c and data[c].notna().any()]


def _compute_panels(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The evaluations with a sampling compute, and the rates the compute plot draws: Pass@1 and the largest Pass@k."""
    if "sample_flops" not in frame.columns or frame["sample_flops"].isna().all():
        raise BadInput("the compute plot needs evaluations that recorded sampling compute (sample_flops): "
                       "evaluate with this version of `ladir-bench eval`")
    data = frame[frame["sample_flops"].notna()]
    columns = _pass_columns(data)
    return data, [columns[0], columns[-1]] if len(columns) > 1 else columns


def _plot_compute(axes, data: pd.DataFrame, columns: list[str]) -> None:
    """Pass@1 and the largest Pass@k against sampling FLOPs per sample: a curve per run over its
    sampling settings (LaDiR's and MDM's step counts), an AR run one point; 95% intervals as error bars."""
    for ax, column in zip(axes, columns):
        for name, group in _series(data, "steps"):
            group = group.sort_values("sample_flops")
            values = 100 * group[column]
            errors = None
            if f"{column}.lo" in group.columns and group[f"{column}.lo"].notna().all():
                errors = [values - 100 * group[f"{column}.lo"], 100 * group[f"{column}.hi"] - values]
            method = f" ({group['method'].iloc[0]})" if "method" in group.columns else ""
            ax.errorbar(group["sample_flops"], values, yerr=errors, marker="o", capsize=3, label=f"{name}{method}")
            if "steps" in group.columns and group["steps"].notna().any():
                for x, y, steps in zip(group["sample_flops"], values, group["steps"]):
                    if pd.notna(steps):
                        ax.annotate(f"{int(steps)}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("sampling FLOPs per sample (labels: denoising steps)")
        ax.set_ylabel(f"{column} (%)")
        ax.set_title(f"{column.capitalize()} vs. sampling compute")


def plot(frame: pd.DataFrame, kind: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = _compute_panels(frame) if kind == "compute" else None
    fig, ax = (plt.subplots(1, len(panels[1]), figsize=(5.5 * len(panels[1]), 4), squeeze=False) if panels
               else plt.subplots(figsize=(6, 4)))
    if panels:
        _plot_compute(ax[0], *panels)
    elif kind == "step-scaling":
        if "steps" not in frame.columns or frame["steps"].isna().all():
            raise BadInput("step-scaling needs evaluations of a diffusion method at several --steps")
        data = frame[frame["steps"].notna()]
        pass_columns = _pass_columns(data)
        for name, group in _series(data, "steps"):
            group = group.sort_values("steps")
            for column in pass_columns[:2]:
                ax.plot(group["steps"], 100 * group[column], marker="o", label=f"{name} {column}")
        ax.set_xlabel("denoising (ODE) steps")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy vs. denoising steps")
    elif kind == "gamma":
        if "gamma_max" not in frame.columns or frame["gamma_max"].nunique() < 2:
            raise BadInput("the gamma plot needs evaluations at several gamma_max (--knob gamma_max=...)")
        data = frame[frame["gamma_max"].notna()]
        pass_columns = _pass_columns(data)
        right = ax.twinx()
        for name, group in _series(data, "gamma_max"):
            group = group.sort_values("gamma_max")
            for column in pass_columns[:2]:
                ax.plot(group["gamma_max"], 100 * group[column], marker="o", label=f"{name} {column}")
            if "diversity" in group.columns and group["diversity"].notna().any():
                right.plot(group["gamma_max"], group["diversity"], marker="s", linestyle="--",
                           label=f"{name} diversity")
        right.set_ylabel("distinct correct solutions per problem")
        right.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("diversity guidance gamma_max")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy and diversity vs. guidance strength")
    elif kind == "pass-at-k":
        pass_columns = _pass_columns(frame)
        for _, row in frame.iterrows():
            ks = [int(c.split("@")[1]) for c in pass_columns if pd.notna(row[c])]
            values = [100 * row[f"pass@{k}"] for k in ks]
            label = f"{row.get('run', '')} {row.get('task', '')}" + (f" steps={int(row['steps'])}" if pd.notna(row.get("steps")) else "")
            ax.plot(ks, values, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel("Pass@k (%)")
        ax.set_title("Pass@k")
    else:
        raise BadInput(f"unknown plot kind {kind!r} (step-scaling, gamma, pass-at-k, compute)")
    for each in np.ravel(ax):  # the panels (not the gamma plot's right axis, with its own legend)
        each.grid(alpha=0.3)
        if each.get_legend_handles_labels()[0] and not panels:
            each.legend(fontsize=7)
    if panels:  # the panels share their curves: one legend below them, clear of the points
        handles, labels = np.ravel(ax)[0].get_legend_handles_labels()
        fig.set_figheight(4 + 0.17 * len(labels))
        fig.legend(handles, labels, loc="lower center", fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.17 * len(labels) / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------- the paper's layout (reproduce)
def render_paper_table(header: list[str], rows: list[list[str]], fmt: str, title: str = "",
                       notes: list[str] | tuple[str, ...] = ()) -> str:
    """A table laid out as the paper prints it, its cells already formatted (`ladir-bench reproduce`,
    harness.tools.reproduce): Markdown with its title and notes, LaTeX as a captioned table with the
    notes as comments, CSV the cells alone."""
    frame = pd.DataFrame(rows, columns=header)
    if fmt == "markdown":
        lines = [f"**{title}**", ""] if title else []
        lines.append(frame.to_markdown(index=False, disable_numparse=True))
        return "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else []))
    if fmt == "latex":
        latex = frame.to_latex(index=False, escape=True, caption=title or None)
        return latex + "".join(f"% {note}\n" for note in notes)
    if fmt == "csv":
        return frame.to_csv(index=False)
    raise BadInput(f"unknown table format {fmt!r} (markdown, latex, csv)")
