"""Task registry: `--task NAME` resolves here. Adding a task is adding one module that registers it."""

from __future__ import annotations

from collections.abc import Callable

from harness.registry import Registry
from tasks.base import ANSWER_MARKER, Problem, Task, Verdict, extract_after_answer_marker, split_reasoning


def _load_builtin_tasks() -> None:
    # Importing the modules runs their @register_task decorators.
    from tasks import code, countdown, math  # noqa: F401


TASKS: Registry[Callable[..., Task]] = Registry("task", _load_builtin_tasks)
register_task = TASKS.register


def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str, seed: int = 0, **options) -> Task:
    return TASKS.resolve(name)[1](seed=seed, options=options)


__all__ = [
    "ANSWER_MARKER",
    "Problem",
    "Task",
    "Verdict",
    "extract_after_answer_marker",
    "get_task",
    "register_task",
    "split_reasoning",
    "task_names",
]
