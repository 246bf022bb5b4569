"""The training recipe end to end at toy size: batches, loss, checkpoints, resume."""

import json

import numpy as np
import pytest
import torch

import stdec
from stdec.errors import StdecError
from stdec.testbed.train import (
    Batches,
    TrainConfig,
    diffusion_loss,
    digit_ids,
    lr_at,
    number_groups,
    train,
)

TOY = dict(train_limit=100, steps=4, batch_size=4, d_model=32, n_layers=1, n_heads=2,
           mlp_hidden_size=64, vocab_size=400, warmup=2, eval_every=4, eval_limit=2,
           save_every=2, tasks="lists")


def test_batches_pad_like_the_decoding_loop():
    examples = [([7, 8, 9], [20, 21, 99], 0), ([7], [30, 99], 0)]
    ids = {"eos": 1, "pad": 1, "mask": 2}
    x, pos, keys, target, masked, t, P = Batches(examples, [12], ids, 8, 0, 4)(0, "cpu")
    assert int(P) == 3 and x.shape[1] - 3 == target.shape[1] >= 3
    for b in range(8):
        n_pad = int((~keys[b]).sum())
        assert pos[b, n_pad] == 0 and (pos[b, n_pad:] == torch.arange(x.shape[1] - n_pad)).all()
        # the response is the answer then EOS to the end; masked tokens show the mask id
        answer = target[b][target[b] != 1].tolist()
        assert answer in ([20, 21, 99], [30, 99])
        assert ((x[b, 3:] == 2) == masked[b]).all()
    assert ((0 < t) & (t <= 1)).all()


def test_a_batch_holds_one_task_and_spreads_its_mask_ratios():
    examples = [([7], [20, 99], 0)] * 3 + [([8, 8], [30, 31, 32, 99], 1)] * 5
    ids = {"eos": 1, "pad": 1, "mask": 2}
    batches = Batches(examples, [8, 16], ids, 4, 0, 4)
    seen = set()
    for step in range(20):
        x, pos, keys, target, masked, t, P = batches(step, "cpu")
        task = int(int(P) == 2)  # the two tasks' prompts differ in length
        assert x.shape[1] - int(P) <= [8, 16][task]
        seen.add(task)
        # stratified: one draw u in each quarter of [0, 1), then t = eps + (1 - eps) u
        u = (t.flatten() - 1e-3) / (1 - 1e-3)
        assert sorted((u * 4).long().clamp(max=3).tolist()) == [0, 1, 2, 3]
    assert seen == {0, 1}


def test_number_groups_give_each_value_one_group():
    tokenizer = stdec.load("testbed")[1]
    text = "So 63 - 19 = 44, so 44 are left. 4 + 40 = 44\n#### 44"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    groups = number_groups(ids, digit_ids(tokenizer))
    numbers = {}  # value -> the groups of its digit tokens
    for tok, g in zip(ids, groups, strict=True):
        s = tokenizer.decode([tok])
        assert (g > 0) == s.isdigit()
    runs, run = [], []
    for tok, g in zip([*ids, None], [*groups, 0], strict=True):
        if g:
            run.append((tokenizer.decode([tok]), g))
        elif run:
            runs.append(run)
            run = []
    for run in runs:
        numbers.setdefault("".join(d for d, _ in run), set()).update(g for _, g in run)
    assert set(numbers) == {"63", "19", "44", "4", "40"}
    assert all(len(gs) == 1 for gs in numbers.values())  # each value one group, all its digits
    assert len({next(iter(gs)) for gs in numbers.values()}) == 5  # and values never share one


def test_tied_rows_mask_every_occurrence_of_a_number_together():
    digits = np.full(100, -1)
    digits[10:20] = np.arange(10)  # ids 10..19 are the digits 0..9
    answer = [30, 14, 14, 31, 13, 32, 14, 14, 33, 14, 14, 99]  # 44 . 3 . 44 . 44
    examples = [([7], answer, 0)]
    ids = {"eos": 1, "pad": 1, "mask": 2}
    plain = Batches(examples, [16], ids, 64, 0, 4)
    tied = Batches(examples, [16], ids, 64, 0, 4, tie=1.0, digits=digits)
    same = Batches(examples, [16], ids, 64, 0, 4, tie=0.0, digits=digits)
    split = 0
    for step in range(5):
        masked = tied(step, "cpu")[4]
        fours = masked[:, [1, 2, 6, 7, 9, 10]]
        assert (fours == fours[:, :1]).all()  # all of 44's digits, everywhere, or none
        split += int((plain(step, "cpu")[4][:, [1, 2, 6, 7, 9, 10]].sum(1) % 6 != 0).sum())
        for a, b in zip(plain(step, "cpu"), same(step, "cpu"), strict=True):
            assert torch.equal(a, b)  # tie 0 draws exactly what it drew before
    assert split > 0  # untied rows do split a number's occurrences


def test_tie_numbers_is_a_share():
    with pytest.raises(StdecError, match="tie_numbers is a share of rows"):
        TrainConfig(tie_numbers=1.5)


def test_loss_is_weighted_by_the_mask_ratio(tiny_model):
    x = torch.randint(3, 300, (2, 10))
    target = x[:, 4:].clone()
    masked = torch.zeros(2, 6, dtype=torch.bool)
    masked[:, 0] = True
    x[:, 4] = 2
    keys = torch.ones(2, 10, dtype=torch.bool)
    pos = torch.arange(10).expand(2, 10)
    half = diffusion_loss(tiny_model, (x, pos, keys, target, masked, torch.full((2, 1), .5),
                                       torch.tensor(4)))
    full = diffusion_loss(tiny_model, (x, pos, keys, target, masked, torch.ones(2, 1),
                                       torch.tensor(4)))
    torch.testing.assert_close(half, 2 * full)


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1e-3, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) < lr_at(50, cfg) < lr_at(10, cfg)
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_train_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), precision="fp32", **TOY), progress=False)
    model, tok = stdec.load(out)
    lengths = json.loads((out / "stdec_tasks.json").read_text())["lists"]
    assert lengths["long_gen_length"] >= 4 * lengths["longest_answer_tokens"]
    record = json.loads((out / "train_log.json").read_text())
    assert record["hardware"]  # where it was trained, for the model card
    log = record["log"]
    assert [e["step"] for e in log] == [4] and set(log[0]["dev"]) == {"lists"}
    # a resume may change the precision (bf16 autocast runs on any CPU, emulated or not) and
    # the task mixture
    resumed = train(TrainConfig(out=str(out), precision="bf16",
                                **{**TOY, "steps": 6, "tasks": "lists,arith"}), progress=False)
    state = json.loads((resumed / "checkpoint/optimizer/state.json").read_text())
    assert state["step"] == 6
    log = json.loads((resumed / "train_log.json").read_text())["log"]
    assert [(e["step"], e["schedule_steps"], e["precision"], e["tasks"]) for e in log] == [
        (4, 4, "fp32", "lists"), (6, 6, "bf16", "lists,arith")]
    assert set(log[1]["dev"]) == {"lists", "arith"}
    assert all(e["loss"] == e["loss"] for e in log)  # finite, not NaN
    out_ = stdec.generate(model, tok, "Sort the list [3, 1, 2].", gen_length=8, block_length=8)
    assert isinstance(out_.texts[0], str)
    with pytest.raises(StdecError, match="trained with other settings"):
        train(TrainConfig(out=str(out), **{**TOY, "d_model": 64}), progress=False)


def test_bad_train_options():
    with pytest.raises(StdecError, match="unknown task 'chess'"):
        TrainConfig(tasks="gsm,chess")
    with pytest.raises(StdecError, match="min_lr <= lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(StdecError, match="precision must be auto, bf16 or fp32, got 'fp8'"):
        TrainConfig(precision="fp8")


def test_init_starts_from_a_checkpoints_weights_and_tokenizer(tmp_path):
    first = train(TrainConfig(out=str(tmp_path / "a"), precision="fp32", **TOY), progress=False)
    frozen = {**TOY, "steps": 2, "warmup": 0, "lr": 1e-12, "min_lr": 1e-12, "weight_decay": 0.0}
    again = train(TrainConfig(out=str(tmp_path / "b"), precision="fp32", init=str(first),
                              **frozen), progress=False)
    (a, tok_a), (b, tok_b) = stdec.load(first), stdec.load(again)
    assert tok_a.get_vocab() == tok_b.get_vocab()
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-9, rtol=0)  # two steps at lr 1e-12
    with pytest.raises(StdecError, match="pass --d-model 32 to train it"):
        train(TrainConfig(out=str(tmp_path / "c"), init=str(first), **{**TOY, "d_model": 64}),
              progress=False)
