"""GPQA from its released CSV layout: options shuffled with a fixed seed, scored on the letter."""

import csv
import json

import pytest

from stdec.bench import BenchConfig, run_bench
from stdec.errors import StdecError
from stdec.tasks import get_task
from stdec.tasks.gpqa import chosen_letter

# the released files carry more columns than the task reads; a few of them, in their order
HEADER = ["Pre-Revision Question", "Question", "Correct Answer", "Incorrect Answer 1",
          "Incorrect Answer 2", "Incorrect Answer 3", "Explanation", "Record ID",
          "High-level domain", "Subdomain"]
ROWS = [
    ["?", "Which gas makes up most of Earth's atmosphere?", "Nitrogen", "Oxygen",
     "Argon", "Carbon dioxide", "", "recA1", "Chemistry", "General"],
    ["?", "How many protons does a carbon atom have?", "6", "12", "8", "14", "", "recB2",
     "Physics", "Atomic"],
    ["?", "Which organelle makes ATP? [title]", "Mitochondrion", "Ribosome", "Nucleus",
     "Golgi body", "", "recC3", "Biology", "Cell"],
]


@pytest.fixture
def gpqa_file(tmp_path):
    path = tmp_path / "gpqa_diamond.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(ROWS)
    return path


def option_text(prompt: str, letter: str) -> str:
    line = next(x for x in prompt.splitlines() if x.startswith(f"({letter}) "))
    return line[4:]


def test_options_are_shuffled_once_and_the_gold_letter_names_the_correct_answer(gpqa_file):
    problems = get_task("gpqa", path=str(gpqa_file)).problems("test")
    again = get_task("gpqa", path=str(gpqa_file)).problems("test")
    assert [p.prompt for p in problems] == [p.prompt for p in again]  # fixed seed
    assert [p.id for p in problems] == ["gpqa-recA1", "gpqa-recB2", "gpqa-recC3"]
    for row, p in zip(ROWS, problems, strict=True):
        assert option_text(p.prompt, p.meta["answer"]) == row[2].replace(" [title]", "")
        assert sorted(option_text(p.prompt, x) for x in "ABCD") == sorted(row[2:6])
        assert p.answer == f"The answer is ({p.meta['answer']})."
    # another seed deals other letters for at least one of the questions
    other = get_task("gpqa", seed=1, path=str(gpqa_file)).problems("test")
    assert [p.prompt for p in other] != [p.prompt for p in problems]
    assert "[title]" not in problems[2].prompt and "organelle makes ATP?." in problems[2].prompt


@pytest.mark.parametrize("output, letter", [
    ("Nitrogen is most of the air. The answer is (C).", "C"),
    ("The answer is B", "B"),
    ("answer: (D)", "D"),
    ("First I thought (A), but the answer is (B).", "B"),
    ("Between (A) and (C) it must be (C)", "C"),
    ("B", "B"), ("(d)", None), ("D.", "D"),
    ("The answer is a mixture of gases.", None),
    ("I do not know.", None),
])
def test_chosen_letter(output, letter):
    assert chosen_letter(output) == letter


def test_scored_on_the_chosen_letter(gpqa_file):
    task = get_task("gpqa", path=str(gpqa_file))
    p = task.problems("test")[0]
    wrong = next(x for x in "ABCD" if x != p.meta["answer"])
    assert task.score(p, f"So the answer is ({p.meta['answer']}).")
    assert not task.score(p, f"So the answer is ({wrong}).")
    assert not task.score(p, "Nitrogen")  # the option's text is not a letter


def test_bad_files_get_one_sentence(tmp_path):
    with pytest.raises(StdecError, match="does not exist"):
        get_task("gpqa", path=str(tmp_path / "none.csv"))
    with pytest.raises(StdecError, match="needs its data"):
        get_task("gpqa")
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Answer\nq,a\n")
    with pytest.raises(StdecError, match="'Correct Answer'"):
        get_task("gpqa", path=str(bad))
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(HEADER) + "\n")
    with pytest.raises(StdecError, match="holds no questions"):
        get_task("gpqa", path=str(empty))


def test_bench_scores_a_gpqa_file(checkpoint, gpqa_file, tmp_path):
    cfg = BenchConfig(model=str(checkpoint), out=str(tmp_path / "out"),
                      tasks=(f"gpqa={gpqa_file}",), policies=("threshold",),
                      caches=("dual",), lengths=("standard",), stop_at_eos=(True,),
                      gen_length=32, batch_size=4, limit=3)
    records = run_bench(cfg, progress=False)
    assert {r["task"] for r in records} == {"gpqa"} and all(r["n"] == 3 for r in records)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved) == len(records)
