"""`lists`: sort / reverse / dedupe / copy short lists of small integers or words; exact match."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import ClassVar

from stdec.tasks.base import Problem, Task, same_but_spacing

WORDS = (
    "cat", "dog", "sun", "map", "red", "box", "tree", "fish", "milk", "star", "lamp", "rain",
    "bird", "frog", "moon", "leaf", "rock", "ship", "bell", "cake", "kite", "pen", "cup", "hat",
    "owl", "fox", "bee", "ant", "egg", "ice", "jam", "key",
)
OPS: dict[str, Callable[[list], list]] = {
    "sort": sorted,
    "reverse": lambda xs: xs[::-1],
    "dedupe": lambda xs: list(dict.fromkeys(xs)),  # keeps first occurrences, in order
    "copy": list,
}
PROMPTS = {
    "sort": ("Sort the list: {l}", "Sort the list in ascending order: {l}",
             "Return this list sorted: {l}"),
    "reverse": ("Reverse the list: {l}", "Write the list backwards: {l}",
                "Reverse the order of this list: {l}"),
    "dedupe": ("Remove the duplicates from the list, keeping first occurrences: {l}",
               "Dedupe the list, keeping the first copy of each item: {l}",
               "Drop repeated items from the list, keeping each first one: {l}"),
    "copy": ("Copy the list: {l}", "Repeat this list exactly: {l}", "Write the list again: {l}"),
}


def fmt(xs: list) -> str:
    return "[" + ", ".join(map(str, xs)) + "]"


class ListsTask(Task):
    name = "lists"
    gen_length = 48
    default_sizes: ClassVar[dict[str, int]] = {"train": 10000, "dev": 200, "test": 400}

    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:
        op = rng.choice(tuple(OPS))
        n = rng.randint(3, 8)
        # a pool a little smaller than the list makes repeats common, which dedupe needs
        pool = rng.sample(range(100), n + 2) if rng.random() < 0.6 else rng.sample(WORDS, n)
        xs = [rng.choice(pool) for _ in range(n)]
        key = f"{op}|{fmt(xs)}"
        answer = fmt(OPS[op](xs))
        return key, rng.choice(PROMPTS[op]).format(l=fmt(xs)), answer, {"op": op}

    def score(self, problem: Problem, output: str) -> bool:
        return same_but_spacing(output, problem.answer)
