"""The `vision` task (pictures drawn by the project) and the real multimodal benchmarks'
loaders and answer extraction (MathVista, MathVerse, MathVision) on small fixture files."""

import json
from pathlib import Path

import numpy as np
import pytest

from stdec.errors import StdecError
from stdec.tasks import get_task, problem_images
from stdec.tasks.base import split_of
from stdec.tasks.vision_real import edit_distance, mathvision_extract, mathvista_normalize
from stdec.testbed.suites.vision import SIZE, VisionTask, render


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
    assert a.shape == (SIZE, SIZE, 3) and np.array_equal(a, b)
    assert a.min() < 255  # something is drawn


def test_answers_come_in_several_phrasings(task):
    by_question = {}
    for p in task.problems("train"):
        by_question.setdefault(p.meta["kind"], set()).add(p.answer.split()[0])
    assert all(len(starts) >= 2 for starts in by_question.values())


def make(answers: list[str]):
    from stdec.tasks.base import Problem

    return Problem("x", "<image>\nq", answers[0], {"kind": "color", "gold": "red", "scene": {},
                                                  "answers": answers})


PHRASINGS = ["The circle is red.", "It is red.", "The circle in the picture is red."]


@pytest.mark.parametrize("output,ok", [
    ("It is red.", True),
    ("  the circle in the picture   is red. ", True),  # case and spacing aside
    ("It is blue.", False),  # the wrong fact
    ("It is red and blue.", False),  # a second fact
    ("The circle is is red.", False),  # the right fact in a broken sentence
    ("Thet is red.", False),
    ("The circle is red. It is red.", False),
])
def test_scorer_wants_one_of_the_questions_phrasings_with_the_right_fact(output, ok):
    assert VisionTask().score(make(PHRASINGS), output) is ok


def test_every_problem_lists_its_phrasings_with_its_fact(task):
    for p in task.problems("dev"):
        assert p.answer in p.meta["answers"] and len(p.meta["answers"]) == 3
        assert all(p.meta["gold"].lower() in a.lower() or p.meta["kind"] == "number"
                   for a in p.meta["answers"])


# ---- MathVista, MathVerse, MathVision from their released layouts ----

FIXTURES = Path(__file__).parent / "fixtures" / "vision"


def test_benchmarks_load_with_their_images():
    for name, n in (("mathvista", 5), ("mathverse", 3), ("mathvision", 4)):
        task = get_task(name, path=FIXTURES / name)
        problems = task.problems("test")
        assert len(problems) == n
        for p in problems:
            images = problem_images(p)
            assert p.prompt.count("<image>") == len(images)
            assert all(im.size == (8, 8) for im in images)
    mv = get_task("mathverse", path=FIXTURES / "mathverse").problems("test")
    assert [len(problem_images(p)) for p in mv] == [1, 0, 1]  # a Text Only item has none
    vis = get_task("mathvision", path=FIXTURES / "mathvision").problems("test")
    assert vis[2].prompt.index("<image>") < vis[2].prompt.index("Which of")  # where <image1> was
    assert "(E) 10" in vis[2].prompt and "(A) A" not in vis[0].prompt  # letters-only not listed


@pytest.mark.parametrize("pid,output,ok", [
    ("1", "The spring force varies, so the answer is (A).", True),
    ("1", "Yes", True),  # equal to a choice
    ("1", "Answer: B", False),
    ("1", 'The answer is "No".', False),
    ("2", "1000", True),  # parses as the integer answer
    ("2", "The cup holds up to 1000 g, so the answer is 1000.", True),
    ("2", "The answer is 500.", False),
    ("3", "x = 2.5", True),
    ("3", "Solving, \\boxed{2.50}", True),  # rounded to the item's precision
    ("3", "x is 2.4", False),
    ("4", "The largest is angle B.", True),  # the choice's text, by name
    ("4", "(C)", False),
    ("5", "The values are [1, 2, 3].", True),
    ("5", "The values are [1, 2].", False),
])
def test_mathvista_rule_based_scoring(pid, output, ok):
    task = get_task("mathvista", path=FIXTURES / "mathvista")
    problem = next(p for p in task.problems("test") if p.id == f"mathvista-{pid}")
    assert task.score(problem, output) is ok


def test_mathvista_normalisation_is_the_official_one():
    item = {"question_type": "multi_choice", "answer_type": "text", "choices": ["cat", "dog"]}
    assert mathvista_normalize("(B) dog", item) == "dog"
    assert mathvista_normalize("dgo", item) == "dog"  # nearest by edit distance
    assert mathvista_normalize("3.14159", {"question_type": "free_form", "answer_type": "float",
                                           "precision": 2}) == "3.14"
    assert mathvista_normalize("x", {"question_type": "free_form",
                                     "answer_type": "integer"}) is None
    assert edit_distance("kitten", "sitting") == 3


@pytest.mark.parametrize("index,output,ok", [
    ("1", "Angle AED is 40°, so angle CED is 140°. The answer is D.", True),
    ("1", "So the correct option is (D).", True),
    ("1", "The answer is B.", False),
    ("2", "By Pythagoras the hypotenuse is 5. The answer is 5.", True),
    ("2", "It is \\boxed{5}", True),
    ("2", "The answer is 7.", False),
    ("3", "The area is \\boxed{0.5}", True),  # equal as a number
    ("3", "The answer is 1/3.", False),
])
def test_mathverse_rule_based_scoring(index, output, ok):
    task = get_task("mathverse", path=FIXTURES / "mathverse")
    problem = next(p for p in task.problems("test") if p.id == f"mathverse-{index}")
    assert task.score(problem, output) is ok


@pytest.mark.parametrize("qid,output,ok", [
    ("2", "Comparing the price tags, bike A costs the most. \\boxed{A}", True),
    ("2", "The most expensive one is A.", True),
    ("2", "(A)\nbecause it is the biggest", True),
    ("2", "\\boxed{B}", False),
    ("4", "I can see the digits 0, 1, 2, 3, 5 and 8, so the answer is 6.", True),
    ("4", "The count is 6", True),
    ("4", "\\boxed{5}", False),
    ("7", "The largest number is \\boxed{10}", True),  # the gold option's text
    ("7", "\\boxed{E}", True),
    ("7", "\\boxed{8}", False),
    ("9", "The shaded part is \\boxed{\\frac{1}{2}}", True),
    ("9", "The area is 0.5", True),
    ("9", "\\boxed{\\frac{1}{3}}", False),
])
def test_mathvision_rule_based_scoring(qid, output, ok):
    task = get_task("mathvision", path=FIXTURES / "mathvision")
    problem = next(p for p in task.problems("test") if p.id == f"mathvision-{qid}")
    assert task.score(problem, output) is ok


def test_mathvision_extraction_follows_math_v():
    assert mathvision_extract("After checking all options the answer is C.") == "c"
    assert mathvision_extract("The answer is 12") == "12"
    assert mathvision_extract("so x = \\boxed{3}") == "3"


def test_benchmark_folder_errors_are_one_sentence(tmp_path):
    with pytest.raises(StdecError, match="has none of testmini.json"):
        get_task("mathvista", path=tmp_path)
    with pytest.raises(StdecError, match="reads local files only"):
        get_task("mathverse")
    (tmp_path / "testmini.json").write_text(json.dumps(
        {"9": {"pid": "9", "query": "q", "image": "images/9.png", "answer": "1",
               "question_type": "free_form", "answer_type": "integer"}}))
    with pytest.raises(StdecError, match="names image 'images/9.png', which is not in"):
        get_task("mathvista", path=tmp_path)
    (tmp_path / "testmini.json").write_text("{oops")
    with pytest.raises(StdecError, match="it must be JSON"):
        get_task("mathvista", path=tmp_path)
