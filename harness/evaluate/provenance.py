"""Provenance: what made a results file, stamped into its manifest (the real git revision and whether
the tree was dirty, the problem set's hash, the evaluated checkpoint's hash, package versions, every
resolved setting), so a results file alone says what made it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.context import RunContext
from harness.methods import Method
from harness.revision import git_revision
from harness.train.checkpoint import DONE_MARKER, final_checkpoint
from tasks import Problem


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def problems_sha256(problems: list[Problem]) -> str:
    """The evaluated problem set: the same hash means the same problems, prompts and references."""
    return hashlib.sha256(json.dumps(problems, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def evaluated_checkpoint(method: Method, ctx: RunContext) -> dict[str, Any] | None:
    """The weights being sampled: the method's own record (methods with several candidate
    checkpoints, e.g. LaDiR) or its last phase's final checkpoint, with the sha256 of its weight files."""
    record = getattr(method, "checkpoint", None)
    if record is None:
        for phase in reversed(method.stages):
            try:
                step, path = final_checkpoint(ctx.run_dir / phase)
            except FileNotFoundError:
                continue
            record = {"phase": phase, "step": step, "path": str(path)}
            break
    if record is None:
        return None
    weights = sorted(Path(record["path"]).rglob("*.safetensors"))
    return {"phase": record["phase"], "step": record["step"], "sha256": sha256_of(weights) if weights else None}


def manifest(ctx: RunContext, extra: dict[str, Any]) -> dict[str, Any]:
    versions = {}
    for package in ("ladir-bench", "torch", "transformers", "accelerate", "datasets", "evalplus", "math-verify",
                    "typer"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"config": ctx.config.to_dict(), "seed": ctx.seed, "base_objective": ctx.backbone.objective,
            "versions": versions, **git_revision(),
            "python": platform.python_version(), "device": str(ctx.device), **extra}


def training_minutes(run_dir: Path) -> float | None:
    """Wall-clock minutes the run's finished phases trained (their DONE markers' `elapsed_s`, resumptions
    included; a phase of 0 steps trained none; the shared base LM is not counted); None if a phase
    predates the record."""
    seconds = []
    for marker in sorted(run_dir.glob(f"*/{DONE_MARKER}")):
        done = json.loads(marker.read_text())
        seconds.append(0.0 if done.get("steps") == 0 else (done.get("last") or {}).get("elapsed_s"))
    if not seconds or any(s is None for s in seconds):
        return None
    return round(sum(seconds) / 60, 2)
