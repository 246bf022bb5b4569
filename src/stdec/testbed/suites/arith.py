"""`arith`: drills of the integer arithmetic that `gsm` solutions do, written the same way.

A training aid, not part of the suite: a `gsm` solution holds three or so results among
sixty tokens, and most of them are copied again later in the text, so a small model learns
to copy results long before it learns to compute them. A drill is several `a op b = c`
lines with the operand ranges of `gsm` (numbers under 100), every result to be computed.
"""

from __future__ import annotations

import random
from typing import ClassVar

from stdec.tasks.base import Problem, Task, same_but_spacing

PROMPTS = ("Work out: {e}", "Compute each of these: {e}", "Find the value of each: {e}")


def expression(rng: random.Random) -> tuple[str, int]:
    op = rng.choices("+-*/", weights=(3, 3, 3, 1))[0]  # gsm divides about a tenth as often
    if op == "+":
        a = rng.randint(1, 98)
        b = rng.randint(1, 99 - a)
        return f"{a} + {b}", a + b
    if op == "-":
        a = rng.randint(2, 99)
        b = rng.randint(1, a - 1)
        return f"{a} - {b}", a - b
    b = rng.randint(2, 9)
    c = rng.randint(2, 99 // b)
    if op == "*":  # the one-digit factor on either side, as gsm writes both
        return (f"{c} * {b}" if rng.random() < 0.5 else f"{b} * {c}"), b * c
    return f"{b * c} / {b}", c


class ArithTask(Task):
    name = "arith"
    gen_length = 64
    default_sizes: ClassVar[dict[str, int]] = {"train": 20000, "dev": 200, "test": 400}

    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:
        pairs = [expression(rng) for _ in range(rng.randint(3, 6))]
        exprs = [e for e, _ in pairs]
        answer = "\n".join(f"{e} = {v}" for e, v in pairs)
        return "|".join(exprs), rng.choice(PROMPTS).format(e=", ".join(exprs)), answer, {}

    def score(self, problem: Problem, output: str) -> bool:
        return same_but_spacing(output, problem.answer)
