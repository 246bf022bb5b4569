"""The synthetic benchmark suite: splits, variety, scorers, sandbox and evaluate."""

import random
import re
import time
from types import SimpleNamespace

import pytest

import stdec
import stdec.api
from stdec.decoding.config import DecodeConfig
from stdec.tasks import AUX_TASKS, SPLITS, TASKS, Task, evaluate, get_task, run_code
from stdec.testbed.suites.code import FAMILIES, build
from stdec.testbed.suites.gsm import NAMES, STEP_PHRASINGS, TEMPLATES


@pytest.fixture(scope="module")
def tasks():
    return {name: get_task(name) for name in TASKS + AUX_TASKS}


def sample(problems, k=60, seed=0):
    return random.Random(seed).sample(problems, min(k, len(problems)))


def test_splits_sized_disjoint_and_deterministic(tasks):
    for name, task in tasks.items():
        by = {s: task.problems(s) for s in SPLITS}
        assert len(by["test"]) == 400 and len(by["dev"]) == 200, name
        assert len(by["train"]) == (10000 if name == "lists" else 20000), name
        for attr in ("id", "prompt"):
            sets = [{getattr(p, attr) for p in by[s]} for s in SPLITS]
            assert [len(x) for x in sets] == [len(by[s]) for s in SPLITS], (name, attr)
            assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), (name, attr)
        # another seed redraws problems; the split of each still follows from its key alone
        other = get_task(name, sizes={"train": 300, "dev": 300, "test": 300}, seed=1)
        for s in SPLITS:
            theirs = {p.prompt for p in other.problems(s)}
            assert not theirs & {p.prompt for t in SPLITS if t != s for p in by[t]}, (name, s)
        small = get_task(name, sizes={"train": 500})
        assert small.problems("train") == by["train"][:500]
        assert small.problems("test") == by["test"]
        assert task.max_answer_chars == max(len(p.answer) for s in SPLITS for p in by[s])


def test_variety_counts():
    assert len(TEMPLATES) >= 30 and len({t.id for t in TEMPLATES}) == len(TEMPLATES)
    assert len(STEP_PHRASINGS) >= 3 and len(NAMES) >= 50
    assert all(2 <= len(t.steps) <= 4 for t in TEMPLATES)
    assert len(FAMILIES) >= 25 and len({f.name for f in FAMILIES}) == len(FAMILIES)
    assert all(len(f.styles) >= 2 for f in FAMILIES)


def test_arith_drills_hold_gsm_arithmetic_and_reject_a_wrong_result(tasks):
    task = tasks["arith"]
    ops = set()
    for p in sample(task.problems("train"), k=300):
        lines = p.answer.split("\n")
        assert 3 <= len(lines) <= 6 and task.score(p, p.answer + "\n")
        for line in lines:
            a, op, b, r = re.fullmatch(r"(\d+) ([-+*/]) (\d+) = (\d+)", line).groups()
            assert eval(f"{a} {op} {b}") == int(r) and max(map(int, (a, b, r))) < 100, line
            assert f"{a} {op} {b}" in p.prompt
            ops.add(op)
        wrong = re.sub(r"= (\d+)$", lambda m: f"= {int(m.group(1)) + 1}", p.answer)
        assert not task.score(p, wrong)
    assert ops == set("+-*/")


def test_gsm_gold_is_accepted_and_arithmetic_holds(tasks):
    task = tasks["gsm"]
    for s in SPLITS:
        for p in sample(task.problems(s)):
            assert task.score(p, p.answer) and task.score(p, p.answer + "\n")
            assert len(p.answer.split()) < 60
            for a, op, b, r in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", p.answer):
                assert eval(f"{a} {op} {b}") == int(r), p.answer
    p = task.problems("test")[0]
    n = p.meta["answer"]
    assert task.score(p, f"blah\n####   {n} \n")
    assert not task.score(p, p.answer.replace(f"#### {n}", f"#### {n + 1}"))
    assert not task.score(p, p.answer.replace("####", ""))
    assert not task.score(p, f"#### {n}\n#### {n + 1}")


def test_every_code_style_passes_its_asserts():
    rng = random.Random(0)
    for fam in FAMILIES:
        for style in range(len(fam.styles)):
            for _ in range(5):
                _, answer, tests = build(fam, rng, style)
                assert 3 <= len(tests) <= 5
                exec(answer + "\n" + "\n".join(tests), {})  # noqa: S102 (our own gold code)


def test_code_scorer_runs_gold_and_rejects_broken(tasks):
    task = tasks["code"]
    gold = [p for s in SPLITS for p in sample(task.problems(s), 10)]
    assert all(task.score_many(gold, [p.answer for p in gold]))
    broken = gold[:8]
    bodies = [p.answer.rsplit("return", 1)[0] + "return None" for p in broken]
    assert not any(task.score_many(broken, bodies))
    cut = [p.answer[: len(p.answer) // 2] for p in broken]
    assert not any(task.score_many(broken, cut))
    p = gold[0]
    assert task.score(p, f"Here it is:\n```python\n{p.answer}\n```\n")


def test_lists_scorer(tasks):
    task = tasks["lists"]
    for s in SPLITS:
        for p in sample(task.problems(s)):
            assert task.score(p, p.answer) and task.score(p, " " + p.answer.replace(", ", ","))
            items = p.answer[1:-1].split(", ")
            assert not task.score(p, "[" + ", ".join(items[:-1]) + "]")
            if len(set(items)) > 1:
                wrong = items[1:] + items[:1]
                assert not task.score(p, "[" + ", ".join(wrong) + "]")


def test_sandbox_kills_infinite_loop():
    t0 = time.perf_counter()
    res = run_code("while True:\n    pass\n", timeout=1.0)
    assert not res.ok and "timeout" in res.error
    assert time.perf_counter() - t0 < 3.0


def test_sandbox_refuses_outside_writes_and_network(tmp_path):
    target = tmp_path / "escaped.txt"
    res = run_code(f"open({str(target)!r}, 'w').write('x')")
    # the host's folders are not visible inside (more in test_sandbox.py)
    assert not res.ok and not target.exists()
    assert res.error.startswith(("PermissionError", "FileNotFoundError"))
    res = run_code(f"import os\nos.mkdir({str(tmp_path / 'd')!r})")
    assert not res.ok and not (tmp_path / "d").exists()
    res = run_code("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))")
    assert not res.ok and "sandbox" in res.error
    res = run_code("import os\nos.system('true')")
    assert not res.ok and "sandbox" in res.error
    inside = "open('a.txt', 'w').write('hi')\nassert open('a.txt').read() == 'hi'\n"
    assert run_code(inside).ok
    assert run_code("assert 1 + 1 == 2").ok
    assert run_code("raise ValueError('boom')").error == "ValueError: boom"


def test_evaluate_with_fake_generate(tasks, monkeypatch):
    task = tasks["gsm"]
    gold = {p.prompt: p.answer for p in task.problems("dev")}
    calls = []

    def fake_generate(model, tokenizer, prompts, config, *, chat=False, seed=None, images=None,
                      batch_size=None, on_finish=None):
        calls.append((len(prompts), config, chat, seed, batch_size))
        stats = [stdec.RowStats(nfe=4, gen_tokens=10 + i % 2, tpf=(10 + i % 2) / 4,
                                wall_time=0.1, tokens_per_s=100.0) for i in range(len(prompts))]
        return SimpleNamespace(texts=[gold[p] for p in prompts], stats=stats)

    monkeypatch.setattr(stdec.api, "generate", fake_generate)
    config = DecodeConfig()
    res = evaluate("model", "tok", task, "dev", config, limit=37, batch_size=16)
    # every problem in one engine run, 16 at once
    assert [(c[0], c[4]) for c in calls] == [(37, 16)]
    # greedy: no per-problem seeds, so the rows share one config
    assert all(c[1] is config and c[2] is True and c[3] is None for c in calls)
    assert res.n == 37 and res.accuracy == 1.0 and all(r.correct for r in res.records)
    assert [r.id for r in res.records] == [p.id for p in task.problems("dev")[:37]]
    assert res.mean_nfe == 4.0
    assert res.gen_tokens == sum(10 + i % 2 for i in range(37))
    assert res.mean_tpf == pytest.approx(res.gen_tokens / 4 / 37)
    assert res.tokens_per_s == pytest.approx(res.gen_tokens / res.wall_time)


def test_unknown_names_raise_clear_errors():
    with pytest.raises(ValueError, match=r"unknown task 'gsm9k'; the tasks are gsm, code, lists"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match=r"unknown split 'val'"):
        get_task("lists").problems("val")


class EchoTask(Task):
    name = "echo"
    gen_length = 8

    def sample(self, rng):
        x = str(rng.randrange(10**6))
        return x, f"Say {x}.", x, {}

    def score(self, problem, output):
        return output.strip() == problem.answer


def test_register_task_makes_get_task_build_it():
    from stdec.tasks import ListsTask, register_task, registered_task, unregister_task

    register_task("echo", EchoTask)
    task = get_task("echo", sizes={"dev": 3})
    assert isinstance(task, EchoTask) and len(task.problems("dev")) == 3
    register_task("echo", EchoTask)  # the same class again (a spawned process): no error
    with pytest.raises(ValueError, match=r"the tasks are gsm, code, lists, arith, vision, echo"):
        get_task("gsm9k")
    unregister_task("echo")
    with pytest.raises(ValueError, match=r"unknown task 'echo'"):
        get_task("echo")
    with pytest.raises(ValueError, match=r"task 'echo' is not registered"):
        unregister_task("echo")
    # a suite task is replaced only when asked, and a with block puts it back
    with pytest.raises(ValueError, match=r"'lists' is already registered \(ListsTask\); pass "
                                         r"replace=True"):
        register_task("lists", EchoTask)
    with registered_task("lists", EchoTask, replace=True):
        assert isinstance(get_task("lists"), EchoTask)
    assert type(get_task("lists")) is ListsTask
    with registered_task("echo", EchoTask):
        assert isinstance(get_task("echo"), EchoTask)
    with pytest.raises(ValueError, match=r"unknown task 'echo'"):
        get_task("echo")


@pytest.mark.parametrize(("name", "cls", "message"), [
    ("gsm8k", EchoTask, r"task name 'gsm8k' is a real benchmark's; pick another name"),
    ("", EchoTask, r"task name '' must be a non-empty string without '=' or ','"),
    ("a,b", EchoTask, r"task name 'a,b' must be"),
    ("echo", object, r"register_task\('echo', \.\.\.\) needs a subclass of stdec.tasks.Task"),
])
def test_register_task_refuses_bad_input_in_one_sentence(name, cls, message):
    from stdec.tasks import register_task

    with pytest.raises(stdec.StdecError, match=message):
        register_task(name, cls)
