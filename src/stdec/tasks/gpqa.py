"""GPQA (Diamond, Main or Extended) read from its released CSV, four options shuffled with a
fixed seed into A to D, scored on the letter the model chose.

The released files (gpqa_diamond.csv, gpqa_main.csv, ...) have one row a question with the
columns Question, Correct Answer and Incorrect Answer 1..3, among others (Record ID,
Subdomain, ...). The prompt is lm-eval's zero-shot chain-of-thought one.
"""

from __future__ import annotations

import csv
import os
import random
import re
from pathlib import Path

from stdec.errors import StdecError
from stdec.tasks.base import Problem
from stdec.tasks.real import RealTask, Row

__all__ = ["GpqaTask", "chosen_letter"]

LETTERS = "ABCD"
COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
           "Incorrect Answer 3")
PROMPT = ("What is the correct answer to this question: {question}\n\nChoices:\n{choices}\n\n"
          "Let's think step by step, and end with \"The answer is (X)\" where X is the letter.")

_STATED = re.compile(r"(?i:answer)(?:\s+(?i:is))?\s*:?\s*\(?([A-D])\)?(?![A-Za-z])")
_PAREN = re.compile(r"\(([A-D])\)")
_ALONE = re.compile(r"^\s*\(?([A-D])\)?[.:]?\s*$")


def chosen_letter(output: str) -> str | None:
    """The option the output picks: the last "answer is (X)", else the last "(X)", else an
    output that is the letter alone; None when it picks none."""
    for pattern in (_STATED, _PAREN):
        found = pattern.findall(output)
        if found:
            return found[-1].upper()
    alone = _ALONE.match(output)
    return alone.group(1) if alone else None


def _clean(text: str) -> str:
    # as lm-eval's GPQA preprocessing: " [title]" is a sentence break, other [..] dropped
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\s{2,}", " ", re.sub(r"\[.*?\]", "", text))


class GpqaTask(RealTask):
    name = "gpqa"
    fields = COLUMNS
    hub = ("Idavidrein/gpqa", "gpqa_diamond")
    gen_length = 256

    def _read(self, path: str | os.PathLike | None) -> tuple[str, dict[str, list[Row]]]:
        if path is None:
            raise StdecError("task 'gpqa' needs its data: pass gpqa=FILE, the released "
                             "gpqa_diamond.csv (or gpqa_main.csv); the dataset is gated, so "
                             "stdec never downloads it.")
        p = Path(path).expanduser()
        if not p.is_file():
            raise StdecError(f"gpqa data file {p} does not exist; pass the released "
                             "gpqa_diamond.csv or gpqa_main.csv.")
        try:
            with open(p, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise StdecError(f"gpqa file {p} has no {', '.join(map(repr, missing))} "
                                     "column; pass the released CSV (Question, Correct Answer, "
                                     "Incorrect Answer 1..3).")
                rows = [(f"{p}:{i + 2}", dict(row)) for i, row in enumerate(reader)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise StdecError(f"cannot read gpqa file {p} ({e}); pass the released UTF-8 "
                             "CSV.") from None
        if not rows:
            raise StdecError(f"gpqa file {p} holds no questions; pass the released CSV.")
        return str(p), {"test": rows}

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        options = [_clean(item[c]) for c in COLUMNS[1:]]
        if not all(options) or not item["Question"].strip():
            raise StdecError(f"gpqa row at {where} has an empty question or option; every row "
                             "needs Question, Correct Answer and Incorrect Answer 1..3.")
        record = (item.get("Record ID") or "").strip() or str(index)
        order = list(range(4))
        # fixed per question: the same file gives the same letters in every run and shard
        random.Random(f"gpqa:{self.seed}:{record}").shuffle(order)
        gold = LETTERS[order.index(0)]  # option 0 is the correct answer
        choices = "\n".join(f"({LETTERS[k]}) {options[i]}" for k, i in enumerate(order))
        prompt = PROMPT.format(question=_clean(item["Question"]), choices=choices)
        return Problem(f"gpqa-{record}", prompt, f"The answer is ({gold}).",
                       {"answer": gold, "domain": item.get("High-level domain", "")})

    def score(self, problem: Problem, output: str) -> bool:
        return chosen_letter(output) == problem.meta["answer"]
