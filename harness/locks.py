"""One process at a time per run phase and per results folder.

Two `ladir-bench` processes writing the same checkpoints or appending to the same samples.jsonl
would interleave their writes. An advisory `flock` on a `.lock` file in the folder prevents it: the
kernel releases it when its holder dies, even by SIGKILL, so a crashed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from harness.errors import InUse
from harness.progress import console

LOCK_FILE = ".lock"
# set by a grid: a shared phase another process holds is given up on (InUse), not waited for, so the
# grid goes on to runs that do not need it and comes back at the end
_moving_on = ContextVar("moving_on", default=False)


@contextmanager
def exclusive(directory: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold `directory`'s lock for the block. Taken by another process: InUse naming it and its pid,
    or with `wait` (a shared base checkpoint another run is training), block until it is free, unless
    inside `moving_on_from_shared`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    with path.open("a+") as handle:
        if not _try_lock(handle):
            holder = _written_pid(handle)
            if not wait or _moving_on.get():
                raise InUse(f"{what} {directory} is in use by another process (pid {holder}); "
                            "wait for it to finish or stop it", directory)
            console.print(f"waiting for process {holder}, which holds {what} {directory}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def moving_on_from_shared(active: bool = True) -> Iterator[None]:
    """Within the block (if `active`), `exclusive(..., wait=True)` on a folder another process holds
    raises InUse as an unshared one does: for a grid, which has other runs to train meanwhile."""
    token = _moving_on.set(active)
    try:
        yield
    finally:
        _moving_on.reset(token)


def _written_pid(handle) -> str:
    """The pid the lock's holder wrote into the lock file ("?" before it has)."""
    handle.seek(0)
    return handle.read().strip() or "?"


def _try_lock(handle, attempts: int = 5) -> bool:
    """Take the lock without blocking; a few tries over a tenth of a second, so that a `holder` query,
    which takes it for an instant, is not mistaken for a holder."""
    for attempt in range(attempts):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < attempts - 1:
                time.sleep(0.025)
    return False


def holder(directory: Path) -> str | None:
    """The pid of the process holding `directory`'s lock, None when it is free (or cannot be asked: a
    read-only runs folder). Asking takes the lock for an instant, once."""
    path = directory / LOCK_FILE
    if not path.is_file():
        return None
    try:
        handle = path.open("a+")
    except OSError:
        return None
    with handle:
        if not _try_lock(handle, attempts=1):
            return _written_pid(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None
