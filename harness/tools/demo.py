"""`ladir-bench demo`: the whole pipeline in CPU minutes.

The `countdown` table of `ladir-bench reproduce` at the `tiny` scale, cut to AR-SFT and LaDiR on one
Countdown task: one shared base LM is trained on the task's training text; both methods fine-tune from
it with the same step budget; both are evaluated on the same test problems with the same k; the table
is printed in the paper's layout (intervals, LaDiR's paired difference against AR-SFT, the paper's
figures beside), then LaDiR is probed (do its latent blocks carry the answer?). With its default
options the demo's runs are the runs of `ladir-bench reproduce countdown --scale tiny`, so either
command reuses what the other trained. Every piece resumes, so an interrupted demo continues where it was.
"""

from __future__ import annotations

from pathlib import Path

from harness.progress import console
from harness.tools.reproduce import reproduce

DEMO_METHODS = ["ar-sft", "ladir"]


def run_demo(task: str, limit: int, k: int, steps: int, base_steps: int, runs_root: Path) -> list[Path]:
    """Train, evaluate and tabulate AR-SFT and LaDiR on `task`; returns the evaluations' folders."""
    budget = {
        "settings": {"train.steps": steps, "train.base_steps": base_steps},
        # the VAE gets the base LM's budget and stage 2 a sixth of the fine-tuning steps, as at the tiny scale
        "method_settings": {"ladir": {"method_options.vae_steps": base_steps,
                                      "method_options.stage2_steps": max(1, steps // 6)}},
        "eval": {"k": k, "limit": limit},
    }
    result = reproduce("countdown", "tiny", methods=DEMO_METHODS, tasks=[task], runs_root=runs_root,
                       out_dir=runs_root / f"demo-{task}", overrides=budget)
    print(result.text)
    ladir_runs = {e.run.name for e in result.evaluations if e.run.config.method == "ladir"}
    for name in sorted(ladir_runs):
        from harness.runs import open_run
        from ladir.probe import run_probe

        sampler, ctx = open_run(name, runs_root)
        probe, path = run_probe(sampler, ctx, ctx.task, "val", max(2, limit), 10, ctx.seed, None)
        console.print(f"probe ({path}): greedy answer accuracy after oracle blocks {probe['answer_acc_oracle']:.2f}, "
                      f"another problem's {probe['answer_acc_shuffled']:.2f}, noise {probe['answer_acc_noise']:.2f}; "
                      f"after its own blocks {probe['pass1_generated']:.2f}, another problem's {probe['pass1_swapped']:.2f}")
    console.print(f"table, cells and plot in {result.out_dir}")
    return [evaluation.folder for evaluation in result.evaluations]
