"""The `vision` task (pictures drawn by the project) and the real multimodal benchmarks'
loaders and answer extraction (MathVista, MathVerse, MathVision) on small fixture files."""

import numpy as np
import pytest

from stdec.tasks import get_task
from stdec.tasks.base import split_of
from stdec.tasks.vision import VisionTask, mentions, problem_images, render


@pytest.fixture(scope="module")
def task():
    return VisionTask({"train": 600, "dev": 100, "test": 300})


def test_registered_and_every_gold_answer_scores(task):
    assert isinstance(get_task("vision"), VisionTask)
    for split in ("train", "dev", "test"):
        problems = task.problems(split)
        assert all(p.prompt.startswith("<image>\n") for p in problems)
        assert all(task.score(p, p.answer) for p in problems)
        assert {p.meta["kind"] for p in problems} == {"number", "color", "shape", "position", "bar"}


def test_splits_never_share_an_image_or_a_question(task):
    seen = {}
    for split in ("train", "dev", "test"):
        for p in task.problems(split):
            picture = render(p.meta["scene"]).tobytes()
            assert seen.setdefault(picture, split) == split
            assert split_of("vision", VisionTask.key(p)) == split
    texts = {s: {(VisionTask.key(p), p.prompt) for p in task.problems(s)} for s in seen.values()}
    assert not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]


def test_pictures_are_drawn_the_same_every_time(task):
    p = task.problems("test")[0]
    a, b = np.asarray(render(p.meta["scene"])), np.asarray(problem_images(p)[0])
    assert a.shape == (64, 64, 3) and np.array_equal(a, b)
    assert a.min() < 255  # something is drawn


def test_answers_come_in_several_phrasings(task):
    by_question = {}
    for p in task.problems("train"):
        by_question.setdefault(p.meta["kind"], set()).add(p.answer.split()[0])
    assert all(len(starts) >= 2 for starts in by_question.values())


def make(kind: str, gold: str):
    from stdec.tasks.base import Problem

    return Problem("x", "<image>\nq", "a", {"kind": kind, "gold": gold, "scene": {}})


@pytest.mark.parametrize("kind,gold,output,ok", [
    ("number", "3", "There are three circles.", True),
    ("number", "3", "I count 3 shapes.", True),
    ("number", "3", "There are three or four circles.", False),
    ("number", "3", "There are two circles.", False),
    ("color", "red", "The circle is red.", True),
    ("color", "red", "The circle is red and blue.", False),
    ("shape", "circle", "The blue one is a circle.", True),
    ("shape", "circle", "It is a square.", False),
    ("position", "top left", "It is in the top left of the picture.", True),
    ("position", "top left", "It is in the top right.", False),
    ("position", "center", "You can find it in the center.", True),
    ("position", "center", "It is in the top center.", False),
    ("bar", "B", "The tallest bar is bar B.", True),
    ("bar", "B", "Bar b is the tallest.", True),
    ("bar", "B", "Bar B or bar C.", False),
])
def test_scorer_accepts_the_fact_in_any_wording_and_rejects_a_conflict(kind, gold, output, ok):
    assert VisionTask().score(make(kind, gold), output) is ok


def test_mentions_prefers_the_longest_phrase():
    assert mentions("in the top left corner", ("left", "top left")) == {"top left"}
    assert mentions("two circles", ("circle", "square")) == {"circle"}
