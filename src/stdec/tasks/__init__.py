"""Tasks by name: the real benchmarks (GSM8K, MATH500, HumanEval, MBPP, GPQA, the multimodal
ones) read from local files, and the synthetic suite the bundled testbed model is trained and
evaluated on (stdec.testbed.suites)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from stdec.errors import StdecError
from stdec.tasks.base import SPLITS, Problem, Task, format_prompt, problem_images, split_of
from stdec.tasks.evaluate import EvalRecord, EvalResult, evaluate
from stdec.tasks.gpqa import GpqaTask
from stdec.tasks.real import REAL_CLASSES, REAL_TASKS, RealTask
from stdec.tasks.sandbox import SandboxResult, run_code
from stdec.tasks.vision_real import VISION_BENCHMARKS
from stdec.testbed.suites.arith import ArithTask
from stdec.testbed.suites.code import CodeTask
from stdec.testbed.suites.gsm import GsmTask
from stdec.testbed.suites.lists import ListsTask
from stdec.testbed.suites.vision import VisionTask

TASKS = ("gsm", "code", "lists")  # the suite, measured by the model card and the bench
AUX_TASKS = ("arith",)  # training aids, trained on by default and evaluable, not measured
VISION_TASKS = ("vision",)  # image prompts: for vision-language models only
# what get_task builds for a synthetic task's name: the suite, then what register_task adds
_CLASSES: dict[str, type[Task]] = {"gsm": GsmTask, "code": CodeTask, "lists": ListsTask,
                                   "arith": ArithTask, "vision": VisionTask}


# the benchmarks read from local files: real.py's, GPQA (a CSV), the multimodal ones
BENCHMARKS: dict[str, type[RealTask]] = {**REAL_CLASSES, "gpqa": GpqaTask, **VISION_BENCHMARKS}


def get_task(name: str, sizes: dict[str, int] | None = None, seed: int = 0, **kwargs) -> Task:
    """A task by name; `sizes` overrides split sizes, e.g. {"train": 5000}. The real benchmarks
    take `path=` (a JSONL file, or a folder holding test.jsonl); `sizes` caps their splits."""
    if name in BENCHMARKS:
        if set(kwargs) - {"path"}:
            bad = ", ".join(sorted(set(kwargs) - {"path"}))
            raise StdecError(f"task {name!r} got unknown option(s) {bad}; it takes only path=.")
        return BENCHMARKS[name](sizes, seed, **kwargs)
    if name not in _CLASSES:
        added = tuple(n for n in _CLASSES if n not in TASKS + AUX_TASKS + VISION_TASKS)
        names = ", ".join(TASKS + AUX_TASKS + VISION_TASKS + added)
        raise StdecError(f"unknown task {name!r}; the tasks are {names} "
                         f"and the real benchmarks {', '.join(BENCHMARKS)}.")
    if kwargs:
        raise StdecError(f"task {name!r} is synthetic and takes no {', '.join(sorted(kwargs))}; "
                         f"only the real benchmarks ({', '.join(BENCHMARKS)}) take path=.")
    return _CLASSES[name](sizes, seed)


def register_task(name: str, cls: type[Task], *, replace: bool = False) -> None:
    """Make `get_task(name)` build `cls`, a Task subclass, from now on in this process (and so
    `stdec train --tasks`, bench, tune and evaluate). A name already taken (a suite task such
    as "lists") is replaced only with replace=True; a real benchmark's name never is.

    `stdec train` draws large train splits in spawned processes, which look tasks up by name
    in a fresh interpreter where the running script is imported again as `__mp_main__`: a
    script that registers a task for training does so at its top level under that name too.
    """
    if not isinstance(name, str) or not name or "=" in name or "," in name:
        raise StdecError(f"task name {name!r} must be a non-empty string without '=' or ','; "
                         "the command line reads name=path and lists of names.")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise StdecError(f"register_task({name!r}, ...) needs a subclass of "
                         f"stdec.tasks.Task, got {cls!r}.")
    if name in BENCHMARKS:
        raise StdecError(f"task name {name!r} is a real benchmark's; pick another name.")
    if name in _CLASSES and not replace and _CLASSES[name] is not cls:
        raise StdecError(f"task {name!r} is already registered ({_CLASSES[name].__name__}); "
                         "pass replace=True to replace it.")
    _CLASSES[name] = cls


def unregister_task(name: str) -> None:
    """Undo register_task(name): get_task(name) fails again (a suite task is gone too)."""
    if name not in _CLASSES:
        raise StdecError(f"task {name!r} is not registered; the registered tasks are "
                         f"{', '.join(_CLASSES)}.")
    del _CLASSES[name]


@contextmanager
def registered_task(name: str, cls: type[Task], *, replace: bool = False) -> Iterator[None]:
    """register_task for the length of a `with` block; what `name` was before comes back."""
    before = _CLASSES.get(name)
    register_task(name, cls, replace=replace)
    try:
        yield
    finally:
        if before is None:
            _CLASSES.pop(name, None)
        else:
            _CLASSES[name] = before


__all__ = [
    "AUX_TASKS", "BENCHMARKS", "REAL_TASKS", "SPLITS", "TASKS", "ArithTask", "CodeTask",
    "EvalRecord", "EvalResult", "GpqaTask", "GsmTask", "ListsTask", "Problem", "RealTask",
    "SandboxResult", "Task", "VISION_TASKS", "VisionTask", "evaluate", "format_prompt",
    "get_task", "problem_images", "register_task", "registered_task", "run_code", "split_of",
    "unregister_task",
]
