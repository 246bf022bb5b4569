"""`stdec bench --table paper`: the rows and columns of the STDec paper's table."""

from stdec.bench import parse_policy
from stdec.paper import paper_table, rows


def rec(tps: float, acc: float) -> dict:
    return {"tokens_per_s": tps, "accuracy": acc}


def test_half_step_is_fixed_at_two_tokens_a_step():
    assert parse_policy("halfstep") == parse_policy("fixed:half") == parse_policy("fixed:k=2")


def test_rows_in_the_papers_order_then_the_new_rules():
    labels = [label for label, _, _ in rows()]
    assert labels[:6] == ["Vanilla", "Half-Step", "dKV-Cache", "Fast-dLLM", "LocalLeap",
                          "STDec"]
    assert dict((label, (spec, cache)) for label, spec, cache in rows())["Fast-dLLM"] == \
        ("threshold:tau=0.9", "dual")
    assert {spec.partition(":")[0] for _, spec, _ in rows()[6:]} == {"eb", "klass", "wino",
                                                                   "credit"}


def test_table_has_tps_speedup_and_score_per_task_and_on_average():
    records = {"Vanilla": {"code": rec(10.0, 0.9), "lists": rec(20.0, 0.5)},
               "STDec": {"code": rec(40.0, 0.8), "lists": rec(30.0, 0.6)}}
    lines = paper_table(records, ["code", "lists"]).splitlines()
    assert lines[0] == ("| method | code TPS | code speedup | code score | lists TPS | "
                        "lists speedup | lists score | average TPS | average speedup | "
                        "average score |")
    assert lines[2] == ("| Vanilla (none) | 10.0 | 1.00x | 90.0 | 20.0 | 1.00x | 50.0 | 15.0 "
                        "| 1.00x | 70.0 |")
    # speedups per task, 4x and 1.5x, averaged to 2.75x
    assert lines[3] == ("| STDec (dual) | 40.0 | 4.00x | 80.0 | 30.0 | 1.50x | 60.0 | 35.0 | "
                        "2.75x | 70.0 |")
    assert len(lines) == 4  # rows not run are left out
