"""The learning curves that fix the `reference` scale, from the committed curve files (`ladir-bench curve`).

    python results/reference-scale/table.py [--plot] [--needed] [--paired]

Pass@1 carries its 95% interval (a bootstrap over the 100 problems) where the curve file has it: the
curves whose runs' evaluations were still kept when `ladir-bench curve` began recording intervals.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_table import markdown, percent

from harness.evaluate.stats import Paired, format_paired

HERE = Path(__file__).resolve().parent
TRAINING_PROBLEMS = 50_000  # Countdown-3's and -4's training splits: epochs = step x batch / this
# (label, task, curve file, its run's config): the curve that fixed the scale on Countdown-4, AR-SFT's
# run at that scale on Countdown-3 (../countdown3-reference/), the task lever, and the same Countdown-4
# run with a wider model (the size lever), a deeper one (depth) and twice the steps (budget)
CD3_RUN = "ar-sft-countdown3-seed0-53ee81f0fe"
CURVES = [("AR-SFT", "Countdown-4", "lc-ar.curve.json", "lc-ar.config.json"),
          ("AR-SFT", "Countdown-3", f"../countdown3-reference/curves/{CD3_RUN}.curve.json",
           f"../countdown3-reference/configs/{CD3_RUN}.yaml"),
          ("AR-SFT", "Countdown-4", "lc-ar-d192.curve.json", "lc-ar-d192.config.json"),
          ("AR-SFT", "Countdown-4", "lc-ar-l8.curve.json", "lc-ar-l8.config.json"),
          ("AR-SFT", "Countdown-4", "lc-ar-9600.curve.json", "lc-ar-9600.config.json")]
COLUMNS = [("Pass@1", "pass@1"), ("Pass@10", "pass@10"), ("chain_valid@1", "chain_valid@1"),
           ("uses given numbers", "uses_given_numbers"), ("arithmetic exact, all steps", "arithmetic_valid"),
           ("before the last", "arithmetic_valid_before_last"), ("last step", "arithmetic_valid_last"),
           ("last ends at target", "last_step_writes_target"), ("step valid", "step_valid"),
           ("passed without chain", "passed_without_chain")]


def curves() -> list[tuple[str, str, dict, dict]]:
    """(label, task, curve file, its run's config) for each committed curve."""
    import yaml

    return [(label, task, json.loads((HERE / curve).read_text()), yaml.safe_load((HERE / config).read_text()))
            for label, task, curve, config in CURVES]


def with_interval(value: float | None, bounds: list[float] | None) -> str:
    """`31.6 [26.9, 36.1]` where the figure has its interval, else the figure alone."""
    return percent(value) + (f" [{percent(bounds[0])}, {percent(bounds[1])}]" if bounds else "")


def model(config: dict) -> str:
    """The model's width and depth, and its parameters outside the embeddings (attention 4 d^2 and the
    gated MLP 3 d x intermediate per layer, what the matmul FLOPs scale with)."""
    m = config["model"]
    blocks = m["num_layers"] * (4 * m["hidden_size"] ** 2 + 3 * m["hidden_size"] * m["intermediate_size"])
    return f"d {m['hidden_size']}, {m['num_layers']} layers ({blocks / 1e6:.2f}M)"


def table() -> str:
    header = ["method", "task", "model", "fine-tuning step", "of", "epochs", *(name for name, _ in COLUMNS)]
    lines = []
    for label, task, curve, config in curves():
        steps, batch = config["train"]["steps"], config["train"]["batch_size"]
        for row in curve["rows"]:
            lines.append([label, task, model(config), str(row["step"]), str(steps),
                          f"{row['step'] * batch / TRAINING_PROBLEMS:.1f}",
                          *(with_interval(row.get(key), row.get("intervals", {}).get(key)) if key == "pass@1"
                            else percent(row.get(key))
                            for _, key in COLUMNS)])
    return markdown(header, lines, left=3)


def paired() -> str:
    """paired.json (`paired.py`): checkpoint A against checkpoint B on the same problems, A - B with its
    95% interval (paired bootstrap over problems; * where it excludes 0)."""
    def name(side: dict) -> str:
        return f"{side['run']} @ {side['step']}"

    header = ["A", "B", "metric", "A", "B", "A - B"]
    lines = []
    for pair in json.loads((HERE / "paired.json").read_text())["pairs"]:
        for row in pair["metrics"]:
            a, b = (with_interval(row[side]["mean"], [row[side]["lo"], row[side]["hi"]]) for side in ("a", "b"))
            lines.append([name(pair["a"]), name(pair["b"]), row["metric"], a, b,
                          format_paired(Paired(**row["a_minus_b"]))])
    return markdown(header, lines, left=3)


def needed(aim: float = 0.8) -> str:
    """What the last step would have to reach for all of a curve's steps to be `aim` exact at its last
    checkpoint. With S steps a sample, the steps before the last exact at rate b and the last at l, all
    steps are exact at ((S - 1) b + l) / S, so l must reach S aim - (S - 1) b. The last step writes
    "= target" in every sample, so it is exact about as often as the answer is right (Pass@1)."""
    header = ["method", "task", "model", "step", "steps a sample", "before the last", "last step",
              f"last step needed for {100 * aim:.0f}% of all", "Pass@1"]
    lines = []
    for label, task, curve, config in curves():
        row = curve["rows"][-1]
        steps, before = row["steps_per_sample"], row["arithmetic_valid_before_last"]
        lines.append([label, task, model(config), str(row["step"]), f"{steps:.2f}", percent(before),
                      percent(row["arithmetic_valid_last"]), percent(steps * aim - (steps - 1) * before),
                      percent(row["pass@1"])])
    return markdown(header, lines, left=3)


def plot(out: Path) -> Path:
    """Pass@1 (left) and the arithmetic of the sampled steps (right: all steps, and the steps before the
    last) against the fine-tuning step, one colour per curve, the 80% aimed at as a grey line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    loaded = curves()
    for (label, task, curve, config), color in zip(loaded, colors, strict=False):
        steps = [row["step"] for row in curve["rows"]]
        name = f"{label} {task}, {model(config)}, {config['train']['steps']} steps"
        left.plot(steps, [100 * row["pass@1"] for row in curve["rows"]], "-o", color=color, label=name)
        bounded = [row for row in curve["rows"] if "pass@1" in row.get("intervals", {})]
        if bounded:  # the 95% interval over problems, where the curve file records it
            left.fill_between([row["step"] for row in bounded],
                              [100 * row["intervals"]["pass@1"][0] for row in bounded],
                              [100 * row["intervals"]["pass@1"][1] for row in bounded], color=color, alpha=0.12)
        right.plot(steps, [100 * row["arithmetic_valid"] for row in curve["rows"]], "-s", color=color)
        right.plot(steps, [100 * row["arithmetic_valid_before_last"] for row in curve["rows"]], ":^", color=color)
    right.axhline(80, color="grey", linewidth=0.8)
    left.set_ylabel("Pass@1 (%)")
    right.set_ylabel("arithmetic exact (%)")
    right.set_title("sampled steps: all (solid), before the last (dotted)", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("fine-tuning step (batch 64)")
    first = loaded[0][2]
    fig.suptitle(f"AR-SFT learning curves: {first['split']} split, first {first['limit']} problems, k = {first['k']}")
    left.set_title("answers", fontsize=9)
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the learning-curve table (README's first table).")
    parser.add_argument("--plot", action="store_true", help="also write learning-curves.png")
    parser.add_argument("--needed", action="store_true",
                        help="also print what the last step must reach for 80%% of all steps to be exact")
    parser.add_argument("--paired", action="store_true",
                        help="also print the paired differences between checkpoints (paired.json)")
    args = parser.parse_args()
    print(table())
    if args.needed:
        print()
        print(needed())
    if args.paired:
        print()
        print(paired())
    if args.plot:
        print(f"wrote {plot(HERE / 'learning-curves.png')}", file=sys.stderr)
