"""JSONL reading and atomic writing shared by every command that touches problems or samples files."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import BadInput


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one object per non-blank line (of a `.gz` file too); a malformed line is a BadInput naming
    file and line, an unreadable archive a BadInput naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadInput(f"{path}:{line_number}: not UTF-8 text (a binary file?)") from None
                if line.strip():
                    yield _record(path, line_number, line)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise BadInput(f"{path}: not a readable gzip file ({error})") from None


def _record(path: Path, line_number: int, line: str) -> dict[str, Any]:
    """One line's object; anything but a JSON object is a BadInput naming file and line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}:{line_number}: malformed JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise BadInput(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
    return record


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def read_append_log(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of a JSONL file this harness appends to (samples, training logs), and whether its
    last line was torn: a process killed mid-append leaves a final line without its newline, which is
    dropped (its record is redone on resumption). Any other malformed line is a BadInput."""
    path = Path(path)
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn = bool(lines[-1])  # text after the last newline: an append that did not finish
    records = [_record(path, number, line) for number, line in enumerate(lines[:-1], start=1) if line.strip()]
    return records, torn


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write to a temporary file beside the target and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def chmod_as_created(path: str | Path, mode: int) -> None:
    """Give `path` the mode a plain open or mkdir would (`mode` less the umask): mkstemp and mkdtemp
    make private ones (0600, 0700), and results are meant to be shared like any other file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


class atomic_open:
    """Context manager: a text handle whose content replaces `path` only if the block succeeds
    (temporary file beside it, fsync, rename, fsync of the folder)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.handle = None

    def __enter__(self):
        fd, self.tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self.handle = os.fdopen(fd, "w", encoding="utf-8")
        return self.handle

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:  # the content reaches the disk before the rename makes it visible
            self.handle.flush()
            os.fsync(self.handle.fileno())
        self.handle.close()
        if exc_type is None:
            chmod_as_created(self.tmp_name, 0o666)
            os.replace(self.tmp_name, self.path)
            fsync_directory(self.path.parent)
        else:
            os.unlink(self.tmp_name)
        return False
