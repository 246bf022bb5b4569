"""train() by its values: the loss falls on a tiny task, and a run stopped after a checkpoint
and resumed equals the run that never stopped, loss for loss and weight for weight."""

import json

import pytest
import torch
from safetensors.torch import load_file

import stdec.testbed.train as train_module
from stdec.testbed.train import TrainConfig, train

TINY = dict(tasks="lists", train_limit=200, batch_size=8, d_model=32, n_layers=1, n_heads=2,
            mlp_hidden_size=64, vocab_size=400, lr=1e-2, min_lr=1e-3, warmup=2, eval_every=0,
            precision="fp32", steps=12, save_every=6)


REAL_LOSS = train_module.diffusion_loss


class Stop(Exception):
    pass


def run(out, monkeypatch, stop_at=None):
    """Train, recording each step's loss, the first batches and the initial weights; with
    stop_at, stop when step stop_at + 1 begins, after that checkpoint (as a killed job)."""
    seen = {"losses": [], "batches": [], "init": None}

    def loss(model, batch):
        if len(seen["losses"]) == stop_at:  # the step after the checkpoint: killed here
            raise Stop
        if seen["init"] is None:
            seen["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        if len(seen["batches"]) < 4:
            seen["batches"].append(batch)
        value = REAL_LOSS(model, batch)
        seen["losses"].append(value.item())
        return value

    monkeypatch.setattr(train_module, "diffusion_loss", loss)
    try:
        train(TrainConfig(out=str(out), **TINY), progress=False)
    except Stop:
        pass
    return seen


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("train")
    try:
        straight = run(root / "straight", mp)
        first = run(root / "resumed", mp, stop_at=6)
        second = run(root / "resumed", mp)  # picks up the step-6 checkpoint
    finally:
        mp.undo()
    return root, straight, first, second


def test_loss_falls_on_a_tiny_task(runs):
    from stdec.models import load_model

    root, straight, _, _ = runs
    assert len(straight["losses"]) == 12
    model = load_model(root / "straight", device="cpu")
    init = load_model(root / "straight", device="cpu")
    init.load_state_dict(straight["init"])
    with torch.no_grad():
        before = [REAL_LOSS(init, b).item() for b in straight["batches"]]
        after = [REAL_LOSS(model, b).item() for b in straight["batches"]]
    # on the batches it started with, 12 steps take the loss well below where it began
    assert sum(after) < 0.7 * sum(before), (before, after)
    assert before[0] == pytest.approx(straight["losses"][0], rel=1e-6)  # the same objective


def test_resume_continues_exactly(runs):
    root, straight, first, second = runs
    assert len(first["losses"]) == 6 and len(second["losses"]) == 6
    # the same losses step for step: weights, optimizer moments, schedule and data order
    # were all restored (the step-7 loss reads the restored weights; later ones the
    # restored moments and learning rates)
    assert first["losses"] + second["losses"] == straight["losses"]
    a, b = (load_file(root / name / "model.safetensors") for name in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = "checkpoint/optimizer/state"
    ma, mb = (load_file(root / name / f"{state}.safetensors") for name in ("straight", "resumed"))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    for name in ("straight", "resumed"):
        assert json.loads((root / name / f"{state}.json").read_text())["step"] == 12
