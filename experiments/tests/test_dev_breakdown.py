"""experiments/dev_breakdown.py: the arithmetic checker and the report on the bundled testbed."""

import dev_breakdown
import pytest

from stdec.tasks import Problem, get_task
from stdec.testbed.suites.gsm import TEMPLATES


def test_claims_counts_right_and_wrong_arithmetic_by_operator():
    seen, right = dev_breakdown.claims([
        "Ana has 18 + 31 = 49 dollars. 63 - 19 = 64, so 64 are left.",
        "7 * 3 = 21\n45 / 5 = 9\n46 / 4 = 11",  # 46 / 4 is no whole division: wrong
    ])
    assert seen == {"+": 1, "-": 1, "*": 1, "/": 2}
    assert right == {"+": 1, "-": 0, "*": 1, "/": 1}


def test_kinds_name_what_each_task_varies():
    lists, vision = get_task("lists").problems("dev"), get_task("vision").problems("dev")
    assert dev_breakdown.kind("lists", lists[0]).split()[0] in ("sort", "reverse", "dedupe", "copy")
    assert {dev_breakdown.kind("lists", p).split()[1] for p in lists} == {"numbers", "words"}
    worked = Problem("x", "Sort the list: [75, 23, 75]", "1 of 23, 2 of 75. So [23, 75, 75]",
                     {"op": "sort"})
    assert dev_breakdown.kind("lists", worked) == "sort numbers"  # read from the input list
    kinds = {dev_breakdown.kind("vision", p) for p in vision}
    assert {"number (bars)", "number (1 object)", "number (2 objects)"} <= kinds
    gsm = get_task("gsm").problems("dev")[0]
    assert dev_breakdown.kind("gsm", gsm) in {t.id for t in TEMPLATES}


def test_report_on_the_bundled_testbed(capsys):
    dev_breakdown.main(["--tasks", "lists,arith", "--limit", "4", "--threads", "1"])
    out = capsys.readouterr().out
    assert "lists (dev, n=4, gen_length 64):" in out  # the checkpoint's standard length
    assert "arith (dev, n=4, gen_length 96):" in out
    assert "arithmetic +:" in out  # arith drills always write sums


def test_the_vision_probe_refuses_a_single_problem(capsys):
    # with one problem, "the next problem's picture" would be its own: the gap would read zero
    with pytest.raises(SystemExit):
        dev_breakdown.main(["--tasks", "vision", "--probe", "--limit", "1"])
    assert "needs --limit 2 or more, not 1" in capsys.readouterr().err


def test_copy_probe_masks_each_result_alone_and_with_its_copies():
    import stdec

    model, tokenizer = stdec.load("testbed")
    problems = get_task("gsm").problems("dev")[:3]
    probe = dev_breakdown.copy_probe(model, tokenizer, problems)
    results = sum(len(dev_breakdown.CLAIM.findall(p.answer)) for p in problems)
    assert sum(n for (_, mode), (_, n) in probe.items() if mode == "alone") == results
    assert sum(n for (_, mode), (_, n) in probe.items() if mode == "with its copies") == results
    assert all(0 <= right <= n for right, n in probe.values())


def test_the_vision_probe_masks_each_answers_fact_and_tallies_it_by_kind(tmp_path):
    import stdec
    from stdec.testing import random_llava_checkpoint

    vision = get_task("vision").problems("dev")[:6]
    model, tok = stdec.load(random_llava_checkpoint(tmp_path / "vl"), device="cpu")
    tally = dev_breakdown.fact_probe(model, tok, vision)
    assert sum(n for *_, n in tally.values()) == 6
    assert set(tally) == {dev_breakdown.kind("vision", p) for p in vision}
    assert all(0 <= own <= n and 0 <= other <= n for own, other, n in tally.values())
