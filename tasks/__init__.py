"""Task registry: `--task NAME` resolves here. Adding a task is adding one module that registers it."""

from __future__ import annotations

from collections.abc import Callable

from harness.errors import BadInput
from tasks.base import ANSWER_MARKER, Problem, Task, Verdict, extract_after_answer_marker, split_reasoning

_REGISTRY: dict[str, Callable[..., Task]] = {}


def register_task(name: str):
    def decorator(factory: Callable[..., Task]):
        if name in _REGISTRY:
            raise ValueError(f"task {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorator


def _load_builtin_tasks() -> None:
    # Importing the modules runs their @register_task decorators.
    from tasks import code, countdown, math  # noqa: F401


def task_names() -> list[str]:
    _load_builtin_tasks()
    return sorted(_REGISTRY)


def get_task(name: str, seed: int = 0, **options) -> Task:
    _load_builtin_tasks()
    if name not in _REGISTRY:
        raise BadInput(f"unknown task {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](seed=seed, options=options)


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
