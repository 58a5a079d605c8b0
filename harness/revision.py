"""The source's git revision, read once per process (`ladir-bench` reads it as it starts): a long run
records the code it imported, not a checkout someone committed to or edited while it ran."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any


@functools.cache
def git_revision() -> dict[str, Any]:
    """The source's commit and whether tracked files differ from it; nulls outside a git checkout."""
    source = Path(__file__).parent

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=source)
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "--verify", "HEAD")
    if head is None or head.returncode != 0:
        return {"git_revision": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return {"git_revision": head.stdout.strip(), "git_dirty": dirty}
