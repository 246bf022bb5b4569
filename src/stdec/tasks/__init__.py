"""The synthetic benchmark suite the bundled testbed model is trained and evaluated on."""

from __future__ import annotations

from stdec.errors import StdecError
from stdec.tasks.base import SPLITS, Problem, Task, format_prompt, split_of
from stdec.tasks.code import CodeTask
from stdec.tasks.evaluate import EvalRecord, EvalResult, evaluate
from stdec.tasks.gsm import GsmTask
from stdec.tasks.lists import ListsTask
from stdec.tasks.sandbox import SandboxResult, run_code

TASKS = ("gsm", "code", "lists")
_CLASSES: dict[str, type[Task]] = {"gsm": GsmTask, "code": CodeTask, "lists": ListsTask}


def get_task(name: str, sizes: dict[str, int] | None = None, seed: int = 0) -> Task:
    """A task by name; `sizes` overrides split sizes, e.g. {"train": 5000}."""
    if name not in _CLASSES:
        raise StdecError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}.")
    return _CLASSES[name](sizes, seed)


__all__ = [
    "SPLITS", "TASKS", "CodeTask", "EvalRecord", "EvalResult", "GsmTask", "ListsTask", "Problem",
    "SandboxResult", "Task", "evaluate", "format_prompt", "get_task", "run_code", "split_of",
]
