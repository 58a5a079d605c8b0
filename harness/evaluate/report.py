"""Paper-style tables and plots from metrics.json files: Pass@k / diversity tables and the
accuracy-vs-denoising-steps (step scaling) and Pass@k curves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import BadInput

IDENTITY_COLUMNS = ["run", "method", "engine", "task", "split", "k", "steps", "init_noise", "gamma_max",
                    "temperature", "cfg_scale", "reencode"]


def find_metrics(paths: list[str | Path]) -> list[Path]:
    """metrics files named directly, or `metrics.json` / `*.metrics.json` under the given folders (default: runs/)."""
    found: list[Path] = []
    for raw in paths or ["runs"]:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            # `metrics.json` in run folders; `NAME.metrics.json` in committed results folders
            found += sorted(p for p in path.rglob("*metrics.json") if "_base" not in p.parts)
        else:
            raise BadInput(f"no such results file or folder: {path}")
    if not found:
        raise BadInput(f"no metrics.json under {', '.join(map(str, paths or ['runs']))}; run `ladir-bench eval` first")
    return found


def load_frame(paths: list[str | Path]) -> pd.DataFrame:
    rows = []
    for path in find_metrics(paths):
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise BadInput(f"{path}: malformed metrics JSON ({error.msg})") from None
        knobs = metrics.pop("knobs", {}) or {}
        row = {**{k: v for k, v in knobs.items() if k in IDENTITY_COLUMNS}, **metrics, "path": str(path.parent)}
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "engine" in frame.columns:  # metrics name the engine only when it is not the default
        frame["engine"] = frame["engine"].fillna("hf")
    pass_columns = sorted([c for c in frame.columns if c.startswith("pass@")], key=lambda c: int(c.split("@")[1]))
    leading = [c for c in IDENTITY_COLUMNS if c in frame.columns and frame[c].notna().any()]
    trailing = [c for c in ("diversity", "distinct-2", "unique_answers", "n_problems", "n_samples", "samples_per_s",
                            "train_minutes") if c in frame.columns]
    return frame[leading + pass_columns + trailing].sort_values([c for c in ("task", "method", "run") if c in leading])


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
        row.update({f"first valid {k}": v for k, v in record.get("first_block_valid", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def render_table(frame: pd.DataFrame, fmt: str) -> str:
    shown = frame.copy()
    for column in shown.columns:
        if column in PROBE_COLUMNS or column.startswith(("shift ", "tolerance ", "reach ", "first valid ")):
            shown[column] = shown[column].astype(float).round(3)
    for column in shown.columns:
        if column.startswith("pass@"):
            shown[column] = (100 * shown[column]).round(1)
    for column in ("diversity", "distinct-2", "unique_answers", "samples_per_s"):
        if column in shown.columns:
            shown[column] = shown[column].round(3)
    if fmt == "markdown":
        return shown.to_markdown(index=False)
    if fmt == "latex":
        return shown.to_latex(index=False, float_format="%.1f")
    if fmt == "csv":
        return shown.to_csv(index=False)
    raise BadInput(f"unknown table format {fmt!r} (markdown, latex, csv)")


def _series(data: pd.DataFrame, x: str):
    """(label, rows) per curve: one per run and task, split further by any sampling setting other than
    the x axis that differs among them (e.g. the same run sampled with and without `reencode`)."""
    keys = ["run", "task"] + [c for c in IDENTITY_COLUMNS if c not in ("run", "task", x)
                              and c in data.columns and data[c].nunique(dropna=False) > 1]
    for values, group in data.groupby(keys, dropna=False):
        settings = [f"{key}={value}" for key, value in zip(keys[2:], values[2:]) if pd.notna(value)]
        yield " ".join([str(values[0]), *settings]), group


def plot(frame: pd.DataFrame, kind: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if kind == "step-scaling":
        if "steps" not in frame.columns or frame["steps"].isna().all():
            raise BadInput("step-scaling needs evaluations of a diffusion method at several --steps")
        data = frame[frame["steps"].notna()]
        pass_columns = [c for c in data.columns if c.startswith("pass@") and data[c].notna().any()]
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
        pass_columns = [c for c in data.columns if c.startswith("pass@") and data[c].notna().any()]
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
        pass_columns = sorted([c for c in frame.columns if c.startswith("pass@")], key=lambda c: int(c.split("@")[1]))
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
        raise BadInput(f"unknown plot kind {kind!r} (step-scaling, gamma, pass-at-k)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
