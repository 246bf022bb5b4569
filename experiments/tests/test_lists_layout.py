"""experiments/lists_layout.py: the worked layout of dedupe and sort answers, its scorer, and
the breakdown it prints."""

import lists_layout

from stdec.tasks import get_task
from stdec.testbed.suites.lists import ListsTask


def test_worked_lines_number_first_occurrences_and_count_repeats():
    dedupe = lists_layout.worked("dedupe", ["cat", "dog", "cat", 7])
    assert dedupe == "1: cat, 2: dog, cat again, 3: 7"
    assert lists_layout.worked("sort", [75, 23, 75, 63]) == "1 of 23, 1 of 63, 2 of 75"
    assert lists_layout.worked("copy", [1, 2]) == lists_layout.worked("reverse", [1, 2]) == ""


def test_same_problems_with_a_worked_line_before_the_list():
    worked, plain = lists_layout.WorkedListsTask(), ListsTask()
    pairs = list(zip(worked.problems("dev"), plain.problems("dev"), strict=True))
    for w, p in pairs:
        assert (w.id, w.prompt) == (p.id, p.prompt)
        if p.meta["op"] in ("dedupe", "sort"):
            assert w.answer.startswith(("1", "2", "3", "4", "5", "6", "7", "8"))
            assert w.answer.endswith(f". So {p.answer}")
        else:
            assert w.answer == p.answer
    assert {p.meta["op"] for _, p in pairs} == {"dedupe", "sort", "copy", "reverse"}


def test_the_scorer_reads_the_last_list_written():
    task = lists_layout.WorkedListsTask()
    problem = next(p for p in task.problems("dev") if p.meta["op"] == "dedupe")
    assert task.score(problem, problem.answer)
    assert task.score(problem, problem.meta["list"])  # no worked line: the list alone counts
    assert not task.score(problem, f"{problem.meta['list']} So [1]")
    assert not task.score(problem, problem.answer.rsplit("[", 1)[0])  # no list at all


def test_breakdown_on_the_bundled_testbed(capsys):
    assert lists_layout.main(["breakdown", "--model", "testbed", "--limit", "6",
                              "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "lists, worked layout (dev, n=6, gen_length 64):" in out
    assert ", worked line" in out  # the bundled model writes bare lists: its lines are wrong
    assert type(get_task("lists")) is ListsTask  # the suite's task again once main returns


def test_an_unknown_subcommand_is_one_sentence(capsys):
    assert lists_layout.main(["tune"]) == 2
    assert "must be train or breakdown, not tune" in capsys.readouterr().err
