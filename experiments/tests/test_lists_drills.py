"""experiments/lists_drills.py: the `count` drill and its registration for `stdec train`."""

import re

import lists_drills
import pytest

from stdec.errors import StdecError
from stdec.tasks import get_task

LIST = re.compile(r"(\[.*\])")


def items(prompt: str) -> list[str]:
    return LIST.search(prompt).group(1)[1:-1].split(", ")


def test_count_answers_how_often_the_item_occurs():
    task = lists_drills.CountTask()
    problems = task.problems("train")[:500]
    for p in problems:
        item = re.match(r"(?:How many times does|Count the copies of|How often is) (\S+)",
                        p.prompt).group(1)
        assert p.answer == str(items(p.prompt).count(item)), p
    answers = {p.answer for p in problems}
    assert {"0", "1", "2", "3"} <= answers  # absent items and repeats both occur
    assert task.score(problems[0], f" {problems[0].answer} ")
    assert not task.score(problems[0], problems[0].answer + "0")


def test_importing_the_script_registers_nothing():
    # only running it (or a process it spawns) registers `count`
    with pytest.raises(StdecError, match="unknown task 'count'"):
        get_task("count")


def test_an_unknown_subcommand_is_one_sentence(capsys):
    assert lists_drills.main(["breakdown"]) == 2
    assert "must be train, not breakdown" in capsys.readouterr().err
