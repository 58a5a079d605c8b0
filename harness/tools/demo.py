"""`ladir-bench demo`: the whole pipeline in CPU minutes.

One shared base LM is trained on the task's training text; AR-SFT and LaDiR fine-tune from it with
the same step budget; both are evaluated on the same test problems with the same k; LaDiR is
evaluated at several denoising step counts, and probed (do its latent blocks carry the answer?).
Prints the Pass@k / diversity table and the probe, and writes the step-scaling and Pass@k plots.
Every piece resumes, so an interrupted demo continues where it was.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import load_config, parse_override
from harness.evaluate.report import load_frame, plot, render_table
from harness.evaluate.run import evaluate_run
from harness.progress import console
from harness.runs import create_run, open_run

STEP_SCALING = (5, 10, 30)


def run_demo(task: str, limit: int, k: int, steps: int, base_steps: int, runs_root: Path) -> list[Path]:
    shared = [f"task={task}", f"train.steps={steps}", f"train.base_steps={base_steps}"]
    plans = [
        ("ar-sft", [], [{}]),
        ("ladir", [f"method_options.vae_steps={base_steps}", f"method_options.stage2_steps={max(1, steps // 4)}"],
         [{"steps": s} for s in STEP_SCALING]),
    ]
    folders: list[Path] = []
    for method, extra, eval_cells in plans:
        config = load_config("tiny", None, [parse_override(s) for s in [f"method={method}", *shared, *extra]])
        name = f"demo-{method}-{task}"
        console.rule(f"[bold]{name}")
        trainer, _ = create_run(config, name, runs_root)
        trainer.train()
        sampler, ctx = open_run(name, runs_root)
        for knobs in eval_cells:
            _, folder = evaluate_run(sampler, ctx, ctx.task, "test", k, limit, dict(knobs))
            folders.append(folder)
        if method == "ladir":
            from ladir.probe import run_probe

            probe, path = run_probe(sampler, ctx, ctx.task, "val", max(2, limit), 10, ctx.seed, None)
            console.print(f"probe ({path}): greedy answer accuracy after oracle blocks {probe['answer_acc_oracle']:.2f}, "
                          f"another problem's {probe['answer_acc_shuffled']:.2f}, noise {probe['answer_acc_noise']:.2f}; "
                          f"after its own blocks {probe['pass1_generated']:.2f}, another problem's {probe['pass1_swapped']:.2f}")
    frame = load_frame([folder / "metrics.json" for folder in folders])
    print(render_table(frame, "markdown"))
    out_dir = runs_root / f"demo-{task}"
    ladir_rows = frame[frame["method"] == "ladir"]
    written = [plot(ladir_rows, "step-scaling", out_dir / "step-scaling.png"), plot(frame, "pass-at-k", out_dir / "pass-at-k.png")]
    console.print("plots: " + ", ".join(str(p) for p in written))
    return folders
