"""How strong is LaDiR's diversity guidance against the flow it steers? For each setting, the first
PROBLEMS test problems at k = 100 are sampled with the guidance on, and at every guided velocity
evaluation the mean per-trajectory norm of gamma_t F(z) is compared with that of the reasoner's
velocity u(z, t), with the spread of d_ij^2 / sigma^2 among one question's trajectories (the kernel
2 (1 - r) exp(-r) is 0 at r = 1: pairs at the median distance feel no force).

    python results/diversity-reference/guidance_force.py RUNS_DIR RUN PROBLEMS > guidance-force.json
"""
import argparse
import json
from pathlib import Path

import torch

import ladir.sampler as sampler
from harness.runs import open_run

SETTINGS = {  # name: sampling knobs
    "mean, gamma_max 1": {"gamma_max": 1.0},
    "sum (the paper's), gamma_max 0.3": {"gamma_max": 0.3, "guidance_sum": True},
    "sum (the paper's), gamma_max 1": {"gamma_max": 1.0, "guidance_sum": True},
}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("runs_dir", type=Path)
parser.add_argument("run")
parser.add_argument("problems", type=int)
args = parser.parse_args()
torch.set_num_threads(1)
method, ctx = open_run(args.run, args.runs_dir)
problems = ctx.task.problems("test")[: args.problems]
records: list[dict] = []
unguided_step = sampler.FlowMatchSolver.step


def measured_step(self, velocity, t, sample, groups=None):
    if self.gamma_max > 0 and sample.size(0) > 1:
        rows = sample.size(0)
        force = self.gamma_max * t * sampler.grouped_diversity_force(sample, groups, self.guidance_sum)
        first = sample.reshape(rows, -1)[groups == groups[0]] if groups is not None else sample.reshape(rows, -1)
        i, j = torch.triu_indices(len(first), len(first), 1)
        d2 = torch.cdist(first, first).pow(2)[i, j]
        ratio = d2 / d2.sqrt().median().pow(2)
        records.append({"t": round(t, 3), "velocity": float(velocity.reshape(rows, -1).norm(dim=1).mean()),
                        "guidance": float(force.reshape(rows, -1).norm(dim=1).mean()),
                        "r_q10": float(ratio.quantile(0.1)), "r_q90": float(ratio.quantile(0.9))})
    return unguided_step(self, velocity, t, sample, groups)


sampler.FlowMatchSolver.step = measured_step
report = {"run": args.run, "problems": len(problems), "k": 100, "steps": 10, "settings": {}}
with torch.no_grad():
    for name, knobs in SETTINGS.items():
        records.clear()
        method.sample(problems, 100, **knobs)
        by_t: dict[float, list[dict]] = {}
        for record in records:
            by_t.setdefault(record["t"], []).append(record)
        rows = {}
        for t, group in sorted(by_t.items(), reverse=True):
            mean = {key: sum(r[key] for r in group) / len(group) for key in ("velocity", "guidance", "r_q10", "r_q90")}
            rows[str(t)] = {**{key: round(value, 4) for key, value in mean.items()},
                            "guidance_over_velocity": round(mean["guidance"] / mean["velocity"], 4)}
        report["settings"][name] = rows
print(json.dumps(report, indent=1))
