"""The multimodal math benchmarks of the STDec paper, read from local files in their released
layouts, with each benchmark's rule-based answer extraction.

- MathVista testmini (AI4Math/MathVista, lupantech/MathVista): a folder with testmini.json
  (pid -> item, or a list) and the images it names ("images/1.jpg"); the prompt is the item's
  official "query". Scoring follows MathVista's evaluator: a response equal to a choice, or
  one that parses as the answer type, is taken as is; otherwise its GPT extraction step is
  replaced by rules (\\boxed{}, 'The answer is "..."', the text after "answer is", an option
  letter, the last number or list); then the official normalisation (option letter -> choice
  text, else the most similar choice by edit distance; int / rounded float / list) and exact
  comparison.
- MathVerse testmini (AI4Math/MathVerse): testmini.json (a list) and its images; the prompt is
  "query_cot". The official scorer extracts and judges with GPT; the rule-based fallback
  here extracts by rules and compares as its quick_match does (exact), also accepting a
  free-form answer that math-verify judges equal.
- MathVision (mathllm/MATH-V): test.jsonl or testmini.jsonl and images/; the prompt is the
  official one asking for \\boxed{}. Scoring is MATH-V's own rule-based evaluate.py: option
  letter endings, "is N", "the answer is" splitting, the last \\boxed{}, then equality with
  the gold letter or the gold option's text, then math-verify (which parses with
  latex2sympy2_extended, where MATH-V's is_equal parses with latex2sympy).

MathVerse and MathVision need math-verify (`pip install 'stdec[math]'`) and refuse to start
without it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import ClassVar

from stdec.errors import StdecError
from stdec.tasks.base import Problem
from stdec.tasks.math_judge import equivalent, last_boxed
from stdec.tasks.real import RealTask, Row, read_jsonl

__all__ = ["VISION_BENCHMARKS", "MathVerseTask", "MathVisionTask", "MathVistaTask",
           "edit_distance", "mathverse_extract", "mathvision_extract", "mathvista_extract",
           "mathvista_normalize"]

LETTERS = "ABCDEFGH"
_NUM = r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+"


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (MathVista picks the choice nearest an unmatched extraction)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _after_answer_is(text: str) -> str | None:
    m = list(re.finditer(r"(?:answer is|answer:)\s*:?\s*", text, re.IGNORECASE))
    if not m:
        return None
    rest = text[m[-1].end():].split("\n", 1)[0].strip()
    return re.sub(r"\.(\s.*)?$", "", rest).strip() or None


def _letter(text: str, n: int) -> str | None:
    """An option letter (of the first n) that a short answer names: "(B)", "B", "B. 12"."""
    valid = LETTERS[:n]
    m = re.fullmatch(rf"\(?([{valid}])\)?(?:[.:)]\s*.*)?", text.strip(), re.DOTALL)
    if m:
        return m.group(1)
    found = re.findall(rf"\(([{valid}])\)", text)
    return found[-1] if found else None


def _last_number(text: str) -> str | None:
    found = re.findall(_NUM, text)
    return found[-1].replace(",", "") if found else None


# ---- MathVista ----

def mathvista_extract(response: str, item: dict) -> str:
    """MathVista's extract_answer with its GPT step replaced by rules."""
    response = response.strip()
    choices, qtype, atype = item.get("choices") or [], item["question_type"], item["answer_type"]
    if not response:
        return ""
    if qtype == "multi_choice" and response in choices:
        return response
    for cast in ((int,) if atype == "integer" else (float,) if atype == "float" else ()):
        try:
            return str(cast(response))
        except ValueError:
            pass
    quick = re.search(r'The answer is "(.*)"\.', response)
    if quick:
        return quick.group(1)
    # the rules in place of the GPT extraction
    cand = last_boxed(response) or _after_answer_is(response) or response
    if qtype == "multi_choice":
        letter = _letter(cand, len(choices))
        if letter:
            return f"({letter})"
        named = [c for c in choices if c and c.lower() in cand.lower()]
        return max(named, key=len) if named else cand
    if atype == "list":
        lists = re.findall(r"\[[^\[\]]*\]", cand)
        return lists[-1] if lists else cand
    return _last_number(cand) or cand


def mathvista_normalize(extraction: str, item: dict) -> str | None:
    """MathVista's normalize_extracted_answer."""
    choices, atype = item.get("choices") or [], item["answer_type"]
    if item["question_type"] == "multi_choice":
        extraction = str(extraction).strip()
        letter = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letter:
            extraction = letter[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in options:
            return choices[options.index(extraction)]
        return min(choices, key=lambda c: edit_distance(extraction, c))
    try:
        if atype == "integer":
            return str(int(float(extraction)))
        if atype == "float":
            return str(round(float(extraction), int(item.get("precision") or 0)))
    except (TypeError, ValueError):
        return None
    return str(extraction)


class _FolderBenchmark(RealTask):
    """A released benchmark folder: one annotation file (or the file itself) and images."""

    files: ClassVar[tuple[str, ...]] = ()  # annotation files looked for in the folder
    gen_length = 512

    def _read(self, path: str | os.PathLike | None) -> tuple[str, dict[str, list[Row]]]:
        if path is None:
            return self._fallback()
        p = Path(path).expanduser()
        if p.is_dir():
            found = [p / f for f in self.files if (p / f).is_file()]
            if not found:
                raise StdecError(f"{self.name} folder {p} has none of {', '.join(self.files)}; "
                                 f"pass the benchmark's released folder.")
            p = found[0]
        if not p.is_file():
            raise StdecError(f"{self.name} data {p} does not exist; pass the folder holding "
                             f"{' or '.join(self.files)} and its images.")
        self.root = p.parent
        if p.suffix == ".jsonl":
            return str(p), {"test": read_jsonl(p, self.name)}
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StdecError(f"cannot read {self.name} file {p} ({e}); it must be JSON.") from None
        items = data.items() if isinstance(data, dict) else enumerate(data)
        rows = [(f"{p}:{key}", item) for key, item in items]
        if not rows or not all(isinstance(item, dict) for _, item in rows):
            raise StdecError(f"{self.name} file {p} must hold a list (or a map) of JSON objects.")
        return str(p), {"test": rows}

    def _fallback(self) -> tuple[str, dict[str, list[Row]]]:
        raise StdecError(f"task {self.name!r} reads local files only: pass path= the folder of "
                         f"its released data ({' or '.join(self.files)} and the images).")

    def _image(self, where: str, name: str) -> str:
        # the name is relative to the folder, or to its images/ (where an images.zip unpacks)
        for path in (self.root / name, self.root / "images" / name):
            if path.is_file():
                return str(path)
        raise StdecError(f"{self.name} item at {where} names image {name!r}, which is not "
                         f"in {self.root}; unpack the benchmark's images there.")


class MathVistaTask(_FolderBenchmark):
    name = "mathvista"
    files = ("testmini.json", "annot_testmini.json")
    fields = ("pid", "query", "image", "answer", "question_type", "answer_type")

    def _check(self, where: str, item: dict) -> dict:
        item = {**item, "pid": str(item.get("pid", where.rsplit(":", 1)[-1]))}
        return super()._check(where, item)

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        meta = {"image_path": self._image(where, item["image"]), "item": item}
        return Problem(f"mathvista-{item['pid']}", "<image>\n" + item["query"],
                       str(item["answer"]), meta)

    def score(self, problem: Problem, output: str) -> bool:
        item = problem.meta["item"]
        pred = mathvista_normalize(mathvista_extract(output, item), item)
        return pred is not None and str(pred).strip() == str(item["answer"]).strip()


# ---- MathVerse ----

def mathverse_extract(response: str, multiple_choice: bool) -> str:
    """The final answer by rules (in place of MathVerse's GPT extraction)."""
    cand = last_boxed(response) or _after_answer_is(response) or response.strip()
    if multiple_choice:
        return _letter(cand, 5) or _letter(response, 5) or cand
    return cand if len(cand) < 40 else (_last_number(cand) or cand)


class MathVerseTask(_FolderBenchmark):
    name = "mathverse"
    math_verify = True
    files = ("testmini.json",)
    fields = ("sample_index", "question", "image", "answer", "question_type", "query_cot")

    def _check(self, where: str, item: dict) -> dict:
        item = {**item, "sample_index": str(item.get("sample_index", ""))}
        return super()._check(where, item)

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        image = item["image"].strip()  # "Text Only" items have none
        meta = {"item": item, **({"image_path": self._image(where, image)} if image else {})}
        prompt = ("<image>\n" if image else "") + item["query_cot"]
        return Problem(f"mathverse-{item['sample_index']}", prompt, item["answer"], meta)

    def score(self, problem: Problem, output: str) -> bool:
        item = problem.meta["item"]
        mc = item["question_type"] == "multi-choice"
        pred = mathverse_extract(output, mc).strip()
        gold = item["answer"].strip()
        if mc:
            return pred.upper() == gold.upper()
        return pred == gold or equivalent(pred, gold)


# ---- MathVision ----

PROMPT = ('Please solve the problem and put your answer in one "\\boxed{}". If it is a multiple '
          'choice question, only one letter is allowed in the "\\boxed{}".\n')


def mathvision_extract(response: str) -> str:
    """MATH-V's evaluate.py steps, in order, up to find_math_answer."""
    ans = response.strip()
    for c in "ABCDE":
        if ans.endswith((f" {c}.", f" ({c}).")) or ans.startswith((f"{c}\n", f"({c})\n",
                                                                    f"({c}) {c}\n")):
            ans = c
    tail = ans.split("is ")[-1].rstrip(".")
    if re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", tail):
        ans = tail
    if "oxed{" not in ans:
        for flag in ("the final answer is", "the answer is", "the correct answer is",
                     "the answer should be"):
            for f in (flag, flag.replace("the", "The")):
                if f in ans:
                    ans = ans.split(f)[-1].strip().split("\n")[0].split(". ")[0]
    boxed = last_boxed(ans)
    ans = (boxed if boxed is not None else ans).lower()
    ans = ans.split("=")[-1].split("\\approx")[-1].replace(" ", "")
    for a, b in (("\\text", ""), ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""),
                 ("^\\circ", ""), ("units", "")):
        ans = ans.replace(a, b)
    for c in "abcde":
        ans = ans.replace(f"({c})", c).replace(f"{{{c}}}", c)
    return ans.rstrip(".").lstrip(":").strip()


def _mathvision_equal(pred: str, gold: str) -> bool:
    pred, gold = pred.lower().strip(), gold.lower().strip()
    if not pred or not gold:
        return False
    return pred == gold or equivalent(pred, gold)


class MathVisionTask(_FolderBenchmark):
    name = "mathvision"
    math_verify = True
    files = ("test.jsonl", "testmini.jsonl", "data/test.jsonl", "data/testmini.jsonl")
    fields = ("id", "question", "image", "answer")

    def _check(self, where: str, item: dict) -> dict:
        item = {**item, "id": str(item.get("id", "")), "answer": str(item.get("answer", ""))}
        if not isinstance(item.get("options", []), list):
            raise StdecError(f"mathvision item at {where} has options that are not a list.")
        return super()._check(where, item)

    def _read(self, path):
        source, rows = super()._read(path)
        if self.root.name == "data" and not (self.root / "images").is_dir():
            self.root = self.root.parent  # the repository layout: data/test.jsonl, images/
        return source, rows

    def _problem(self, index: int, where: str, item: dict) -> Problem:
        options = item.get("options") or []
        listed = ""
        if options and "".join(options) != LETTERS[: len(options)]:
            listed = "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(options))
        question = item["question"].replace("<image1>", "<image>")
        if "<image>" not in question:
            question = "<image>\n" + question
        meta = {"image_path": self._image(where, item["image"]), "item": item}
        return Problem(f"mathvision-{item['id']}", f"{PROMPT}{question}\n{listed}",
                       item["answer"], meta)

    def score(self, problem: Problem, output: str) -> bool:
        item = problem.meta["item"]
        gold, options = item["answer"], item.get("options") or []
        value = options[ord(gold) - ord("A")] if options and len(gold) == 1 and \
            0 <= ord(gold) - ord("A") < len(options) else ""
        pred = mathvision_extract(output)
        return _mathvision_equal(pred, gold) or _mathvision_equal(pred, value)


VISION_BENCHMARKS: dict[str, type[RealTask]] = {
    "mathvista": MathVistaTask, "mathverse": MathVerseTask, "mathvision": MathVisionTask}
