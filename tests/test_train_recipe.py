"""The testbed v2 recipe's options: task mixture, enlarged train splits, a time budget."""

import numpy as np
import pytest

from stdec.errors import StdecError
from stdec.tasks import get_task
from stdec.tasks.lengths import encode_problem, encode_problems
from stdec.testbed.train import Batches, TrainConfig, fit_to_budget
from stdec.testing import random_checkpoint


def test_mixture_weighs_named_tasks_and_refuses_bad_entries():
    cfg = TrainConfig(tasks="gsm,code,lists", mixture="gsm=3, lists=0.5")
    assert cfg.task_weights == [3.0, 1.0, 0.5]
    assert TrainConfig(tasks="gsm,code").task_weights == [1.0, 1.0]
    for bad in ("gsm", "gsm=0", "gsm=x", "arith=2"):  # arith is not among the tasks
        with pytest.raises(StdecError, match="mixture entry"):
            TrainConfig(tasks="gsm,code,lists", mixture=bad)
    sized = TrainConfig(tasks="gsm,code", train_sizes="gsm=30000")
    assert sized.task_train_sizes == {"gsm": 30000}
    for bad in ("gsm=-5", "gsm=1.5", "lists=100"):
        with pytest.raises(StdecError, match="train_sizes entry"):
            TrainConfig(tasks="gsm,code", train_sizes=bad)


def test_batches_draw_tasks_by_their_weights():
    examples = [([7], [20, 99], 0), ([8, 8], [30, 31, 99], 1)]
    ids = {"eos": 1, "pad": 1, "mask": 2}
    batches = Batches(examples, [8, 8], ids, 2, 0, 4, weights=[3, 1])
    second = np.mean([int(batches(step, "cpu")[6]) == 2 for step in range(800)])
    assert abs(second - 0.25) < 0.05  # task 1 (prompt length 2) a quarter of the time


def test_a_larger_train_split_keeps_dev_and_test():
    small, large = get_task("lists"), get_task("lists", {"train": 20000})
    assert large.problems("train")[:10000] == small.problems("train")
    for split in ("dev", "test"):
        assert large.problems(split) == small.problems(split)


def test_encode_problems_matches_encode_problem(tmp_path):
    from stdec.api import load

    _, tokenizer = load(random_checkpoint(tmp_path / "m"))
    problems = get_task("gsm").problems("dev")[:20]
    assert encode_problems(tokenizer, problems) == [encode_problem(tokenizer, p)
                                                   for p in problems]


def test_time_budget_sets_a_schedule_that_fits(monkeypatch):
    import stdec.testbed.train as train_module

    cfg = TrainConfig(steps=10**6, time_budget=100.0, eval_every=1000, save_every=500)
    # 30 steps timed at 0.1 s each; 10 s gone so far: 0.9 * 100 - 10 = 80 s -> 800 more
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: 3.0)
    fitted = fit_to_budget(cfg, 40, (10, 0.0), elapsed=10.0)
    assert fitted.steps == 840 and fitted.eval_every == 210 and fitted.save_every == 210
    assert fit_to_budget(TrainConfig(time_budget=1.0, eval_every=0, warmup=500), 40,
                         (10, 0.0), elapsed=10.0).eval_every == 0
