"""Problems, deterministic disjoint splits and the task interface shared by the suite."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from stdec.errors import StdecError

if TYPE_CHECKING:
    from PIL import Image

SPLITS = ("train", "dev", "test")
# Share of the key-hash range owned by each split (cumulative). Fixed, so a problem's split
# depends on its key alone, never on sizes, seeds or how often it was drawn.
_SPLIT_CUTS = (("test", 0.10), ("dev", 0.15), ("train", 1.0))


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str  # the user question, plain text (chat templating happens in the tokenizer)
    answer: str  # the gold response the model is trained to produce, without EOS
    meta: dict = field(default_factory=dict)  # what the scorer needs


def key_hash(task: str, key: str) -> str:
    return hashlib.blake2b(f"{task}|{key}".encode(), digest_size=8).hexdigest()


def _owner(h: str) -> str:
    u = int(h, 16) / 2**64
    return next(name for name, cut in _SPLIT_CUTS if u < cut)


def split_of(task: str, key: str) -> str:
    """The split that owns a problem, from its canonical key."""
    return _owner(key_hash(task, key))


def same_but_spacing(output: str, answer: str) -> bool:
    """Exact match up to whitespace: the scorer of the tasks whose answer is the whole text."""
    return "".join(output.split()) == "".join(answer.split())


def format_prompt(problem: Problem) -> str:
    return problem.prompt


def problem_images(problem: Problem) -> list[Image.Image]:
    """The pictures a problem's prompt refers to, one per "<image>": drawn from its scene (the
    testbed's `vision` suite), or read from the file a real benchmark names."""
    if "scene" in problem.meta:
        from stdec.testbed.suites.vision import render

        return [render(problem.meta["scene"])]
    if "image_path" in problem.meta:
        from stdec.models.images import load_image

        return [load_image(problem.meta["image_path"])]
    return []


class Task:
    """A synthetic task: subclasses define `sample` (one random problem) and `score`."""

    name: str = ""
    gen_length: int = 64  # standard generation length in tokens
    default_sizes: ClassVar[dict[str, int]] = {"train": 20000, "dev": 200, "test": 400}

    def __init__(self, sizes: dict[str, int] | None = None, seed: int = 0) -> None:
        self.sizes = {**self.default_sizes, **(sizes or {})}
        self.seed = seed
        self._cache: dict[str, list[Problem]] = {}

    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:
        """One random problem as (canonical key, prompt, answer, meta)."""
        raise NotImplementedError

    def score(self, problem: Problem, output: str) -> bool:
        raise NotImplementedError

    def score_many(self, problems: list[Problem], outputs: list[str]) -> list[bool]:
        return [self.score(p, o) for p, o in zip(problems, outputs, strict=True)]

    def problems(self, split: str) -> list[Problem]:
        if split not in SPLITS:
            raise StdecError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}.")
        if split not in self._cache:
            self._cache[split] = self._build(split, self.sizes[split])
        return self._cache[split]

    @cached_property
    def max_answer_chars(self) -> int:
        return max(len(p.answer) for s in SPLITS for p in self.problems(s))

    def _build(self, split: str, n: int) -> list[Problem]:
        # One stream per task; a split keeps the draws whose key hashes into it, so the first
        # n problems of a split are the same whatever the other sizes are.
        rng = random.Random(f"{self.name}:{self.seed}")
        out: list[Problem] = []
        seen: set[str] = set()
        budget = 50 * n + 10_000
        while len(out) < n:
            budget -= 1
            if budget < 0:
                msg = f"{self.name}: only {len(out)} distinct {split} problems, wanted {n}"
                raise RuntimeError(msg)
            key, prompt, answer, meta = self.sample(rng)
            h = key_hash(self.name, key)
            if h in seen or _owner(h) != split:
                continue
            seen.add(h)
            out.append(Problem(f"{self.name}-{h}", prompt, answer, meta))
        return out
