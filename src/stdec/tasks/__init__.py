"""Tasks by name: the real benchmarks (GSM8K, MATH500, HumanEval, MBPP, GPQA, the multimodal
ones) read from local files, and the synthetic suite the bundled testbed model is trained and
evaluated on (stdec.testbed.suites)."""

from __future__ import annotations

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
        names = ", ".join(TASKS + AUX_TASKS + VISION_TASKS)
        raise StdecError(f"unknown task {name!r}; the tasks are {names} "
                         f"and the real benchmarks {', '.join(BENCHMARKS)}.")
    if kwargs:
        raise StdecError(f"task {name!r} is synthetic and takes no {', '.join(sorted(kwargs))}; "
                         f"only the real benchmarks ({', '.join(BENCHMARKS)}) take path=.")
    return _CLASSES[name](sizes, seed)


__all__ = [
    "AUX_TASKS", "BENCHMARKS", "REAL_TASKS", "SPLITS", "TASKS", "ArithTask", "CodeTask",
    "EvalRecord", "EvalResult", "GpqaTask", "GsmTask", "ListsTask", "Problem", "RealTask",
    "SandboxResult", "Task", "VISION_TASKS", "VisionTask", "evaluate", "format_prompt",
    "get_task", "problem_images", "run_code", "split_of",
]
