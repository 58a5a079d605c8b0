"""What a task is: data (splits, prompt format, reference solutions) plus an exact checker.

Following lm-evaluation-harness, a task is mostly data. Every problem is a plain dict, the same
object that `ladir-bench data` writes one per line:

    {"task_id": "countdown4/test/17", "prompt": "...", "reference": "<reasoning> The answer is ...", ...}

`reference` is the reference completion (reasoning sentences, then `The answer is ...`) that the
training methods learn from; it is absent where a task has no reference reasoning (code tests).
Task-specific fields (Countdown's `numbers`/`target`, math's `answer`, code's `entry_point` and the
evalplus fields) sit beside them, as DESIGN.md's problems-file format says.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

Problem = dict[str, Any]

SPLIT_SIZE_OPTIONS: dict[str, type] = {"train_size": int, "val_size": int, "test_size": int}

ANSWER_MARKER = "The answer is"
_ANSWER_RE = re.compile(r"the answer is", re.IGNORECASE)
# A sentence ends at . ! or ? followed by whitespace; "3.5" and "x.y" never split.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Verdict:
    """The checker's decision on one completion.

    `canonical` identifies the solution for diversity metrics: two correct completions with the
    same canonical form count as one distinct solution (Countdown: the expression with commutative
    operands sorted; math: the normalised final answer; code: None).

    Diagnostics that only some tasks can compute stay None elsewhere (and out of `to_json`):
    `chain_valid`, MGDM's Countdown criterion: every reasoning step is valid arithmetic on the pool
    of numbers and the last one reaches the target, whatever the answer sentence says;
    `uses_given_numbers`: the answer expression uses exactly the question's numbers, whatever its
    value (a model that copies the numbers but cannot combine them still scores here).
    """

    passed: bool
    answer: str | None = None
    canonical: str | None = None
    reason: str = ""
    chain_valid: bool | None = None
    uses_given_numbers: bool | None = None

    def to_json(self) -> dict[str, Any]:
        record = {"passed": self.passed, "answer": self.answer, "canonical": self.canonical, "reason": self.reason}
        for diagnostic in ("chain_valid", "uses_given_numbers"):
            if getattr(self, diagnostic) is not None:
                record[diagnostic] = getattr(self, diagnostic)
        return record


def extract_after_answer_marker(completion: str) -> str | None:
    """Text after the last `The answer is` (case-insensitive), stripped of a trailing period."""
    matches = list(_ANSWER_RE.finditer(completion))
    if not matches:
        return None
    answer = completion[matches[-1].end():].strip()
    answer = answer.lstrip(":").strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    return answer


def read_local_rows(data_file: str) -> list[dict]:
    """The rows of a local JSONL, JSON (a list of objects) or parquet file, as plain dicts (a row keeps
    only its own fields); BadInput naming the file, and the line where one is bad."""
    import json
    from pathlib import Path

    from harness.errors import BadInput

    path = Path(data_file).expanduser()
    if not path.is_file():
        raise BadInput(f"data file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as error:
                            raise BadInput(f"data file {path}:{number}: not JSON ({error.msg})") from None
        elif suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".parquet":
            import pandas as pd

            rows = [{k: v for k, v in row.items() if v is not None}
                    for row in pd.read_parquet(path).to_dict(orient="records")]
        else:
            raise BadInput(f"data file {path}: expected .json, .jsonl or .parquet, got {suffix or 'no suffix'!r}")
    except BadInput:
        raise
    except Exception as error:  # noqa: BLE001 - any reader failure means an unusable file
        raise BadInput(f"data file {path} could not be read: {type(error).__name__}: {error}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise BadInput(f"data file {path}: expected one JSON object per row")
    return rows


def split_reasoning(target: str) -> tuple[list[str], str]:
    """Split a reference completion into reasoning sentences and the answer sentence.

    LaDiR's blocks (one sentence, one block) and the answer it writes autoregressively both come
    from here: CoT = everything before the last `The answer is`, split into sentences; answer =
    `The answer is ...` to the end.
    """
    matches = list(_ANSWER_RE.finditer(target))
    if not matches:
        cot, answer = target, ""
    else:
        cot, answer = target[: matches[-1].start()], target[matches[-1].start():]
    sentences = [s.strip() for s in _SENTENCE_END_RE.split(cot.strip()) if s.strip()]
    return sentences, answer.strip()


@dataclass
class Task(ABC):
    """A named problem set with deterministic splits and a checker.

    Subclasses set `name`, `kind` ("countdown", "math" or "code") and `checker` (a short description
    shown by `ladir-bench tasks`), and implement `load_split` and `check`.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    checker: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    # The options a task reads (`task_options` in a config, `--data-file`), name -> type: anything
    # else is a typo or an option this task ignores, and is rejected before any work.
    option_types: ClassVar[dict[str, type]] = {}

    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cache: dict[str, list[Problem]] = {}
        self.options = self._validated_options(self.options)

    def _validated_options(self, options: dict[str, Any]) -> dict[str, Any]:
        from harness.errors import BadInput

        checked = {}
        for key, value in options.items():
            if key not in self.option_types:
                known = ", ".join(sorted(self.option_types)) or "none"
                raise BadInput(f"task {self.name!r} has no option {key!r} (its options: {known})")
            wanted = self.option_types[key]
            if value is None:
                checked[key] = None
                continue
            try:
                if wanted is int and (isinstance(value, bool) or float(value) != int(float(value))):
                    raise ValueError
                converted = wanted(float(value)) if wanted in (int, float) else wanted(value)
            except (TypeError, ValueError):
                raise BadInput(f"task option {key}={value!r} for task {self.name!r} must be {wanted.__name__}") from None
            if wanted in (int, float) and converted < 0:
                raise BadInput(f"task option {key}={value!r} for task {self.name!r} must be >= 0")
            checked[key] = converted
        return checked

    @abstractmethod
    def load_split(self, split: str) -> list[Problem]:
        """Build or load one split. Must be deterministic for a given seed and options."""

    @abstractmethod
    def check(self, problem: Problem, completion: str) -> Verdict:
        """Exact verdict on one completion (reasoning + `The answer is ...`, or code)."""

    def problems(self, split: str) -> list[Problem]:
        from harness.errors import BadInput

        if split not in self.splits:
            raise BadInput(f"task {self.name!r} has no split {split!r} (splits: {', '.join(self.splits)})")
        if split not in self._cache:
            self._cache[split] = self.load_split(split)
        return self._cache[split]

    def sizes(self) -> dict[str, int | None]:
        """Split sizes for `ladir-bench tasks`; None where computing it would need unavailable data."""
        from harness.errors import BadInput

        sizes: dict[str, int | None] = {}
        for split in self.splits:
            try:
                sizes[split] = len(self.problems(split))
            except BadInput:
                sizes[split] = None
        return sizes

    def check_many(self, items: Sequence[tuple[Problem, str]], workers: int | None = None) -> list[Verdict]:
        """Verdicts for many (problem, completion) pairs; tasks that execute code run them in parallel."""
        return [self.check(problem, completion) for problem, completion in items]

    def checker_settings(self) -> dict[str, Any]:
        """What a verdict depended on, for the evaluation manifest: the checker, its options and limits."""
        return {"checker": self.checker, "options": dict(self.options)}

    def training_text(self, problem: Problem) -> str:
        """The full text a language model trains on: prompt, then the reference completion."""
        return problem["prompt"] + problem["reference"]

    def split_target(self, target: str) -> tuple[list[str], str]:
        return split_reasoning(target)

    def steps_valid(self, problem: Problem, sentences: Sequence[str]) -> list[bool] | None:
        """Whether each reasoning sentence is a valid step given the ones before it; None where the
        task has no step checker (only Countdown's steps are mechanically checkable)."""
        return None

    def steps_arithmetic(self, sentences: Sequence[str]) -> list[bool] | None:
        """Whether each sentence's arithmetic is right on its own, whatever its operands; None where the
        task has no step checker."""
        return None

    def answer_from_steps(self, problem: Problem, sentences: Sequence[str]) -> str | None:
        """The answer sentence (`The answer is ...`) that the given reasoning steps imply, right or
        wrong; None when they imply none or the task cannot tell."""
        return None
