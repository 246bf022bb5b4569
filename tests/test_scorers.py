"""Every exact-match scorer accepts its gold answer (up to spacing) and rejects it with
anything added: text before, text after, digits glued on. The expected verdicts are written
by hand; only the problems come from the tasks."""

import random
from pathlib import Path

import pytest

from stdec.tasks import AUX_TASKS, REAL_TASKS, TASKS, get_task

FIXTURES = Path(__file__).parent / "fixtures"
EXACT = ("lists", "arith", "gsm", "gsm8k", "math500")  # scored on the text or a final value
BY_EXECUTION = ("code", "humaneval", "mbpp")  # scored by running hidden tests


def test_every_task_is_covered_here():
    assert sorted(EXACT + BY_EXECUTION) == sorted(TASKS + AUX_TASKS + REAL_TASKS)


def some(task, k=40):
    probs = task.problems("dev") + task.problems("test")
    return random.Random(0).sample(probs, min(k, len(probs)))


@pytest.mark.parametrize("name", ["lists", "arith"])
def test_whole_text_tasks_reject_the_gold_with_anything_added(name):
    task = get_task(name)
    for p in some(task):
        g = p.answer
        accepted = [g, " " + g + "\n", g.replace(", ", ","), g.replace("\n", " \n ")]
        rejected = ["Answer: " + g, g + " done", "x" + g, g + "x", g + g, g + "\n" + g,
                    "[" + g, g + "]", g + " 1", "1" + g, g[:-1], g[1:], ""]
        assert all(task.score(p, o) for o in accepted), (name, g)
        for o in rejected:
            assert not task.score(p, o), (name, g, o)


def test_gsm_reads_exactly_the_number_after_the_last_marker():
    task = get_task("gsm")
    for p in some(task):
        n = p.meta["answer"]
        body = p.answer.rsplit("####", 1)[0]
        accepted = [p.answer, f"#### {n}", f"{body}####{n}", f"#### {n}\n", f"#### {n}."]
        rejected = [f"#### {n}0", f"#### 1{n}", f"#### {n}{n}", f"#### -{n}", f"#### {n}.5",
                    f"#### {n},000", f"#### about {n}", f"{n}", body, f"#### {n}\n#### {n + 1}"]
        assert all(task.score(p, o) for o in accepted), (p.answer, n)
        for o in rejected:
            assert not task.score(p, o), (n, o)


def test_gsm8k_reads_exactly_the_final_number():
    task = get_task("gsm8k", path=FIXTURES / "gsm8k.jsonl")
    for p in task.problems("test"):
        n = p.meta["answer"]  # a Fraction's text: an integer in the fixtures
        assert task.score(p, f"#### {n}") and task.score(p, f"so it is {n}.")
        for o in (f"#### {n}0", f"#### 1{n}", f"#### {n}{n}", f"#### -{n}", f"#### {n}.5",
                  f"#### 0.{n}", f"the answer is {n}1", f"{n} then {n}7"):
            assert not task.score(p, o), (n, o)


def test_math500_reads_exactly_the_boxed_value():
    task = get_task("math500", path=FIXTURES / "math500.jsonl")
    for p in task.problems("test"):
        a = p.meta["answer"]
        assert task.score(p, f"\\boxed{{{a}}}") and task.score(p, f"So $\\boxed{{{a}}}$.")
        wrong = [f"\\boxed{{{a}+1}}", f"\\boxed{{{a}, 1}}", f"\\boxed{{-{a}}}",
                 f"\\boxed{{2{a}}}", f"\\boxed{{{a}0}}"]
        if "\\text" not in a:  # math-verify reads the first of two boxed values with units
            wrong.append(f"\\boxed{{{a}}} \\boxed{{2{a}}}")  # (tests/fixtures/math_pairs.jsonl)
        for o in wrong:
            assert not task.score(p, o), (a, o)
