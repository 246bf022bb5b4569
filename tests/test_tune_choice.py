"""`stdec tune`'s choice against a sweep whose figures are written by hand.

The decoding is faked (run_cell returns set counts), so each expected pick below follows
from the table alone: eligible = accuracy on every task within the tolerance of vanilla,
best = the highest mean TPF among the eligible.
"""

import json
from types import SimpleNamespace

import pytest

import stdec.tune as tune_module
from stdec.bench import CellResult
from stdec.cli import main
from stdec.tune import report, tune

N = 200  # dev problems per task: accuracies are counts / 200
VANILLA_CORRECT = {"lists": 160, "arith": 120}  # 80.0 %, 60.0 %
# tau -> per task (correct out of 200, TPF); mean TPF and accuracy drop in points beside
SWEEP = {
    0.5: {"lists": (140, 9.0), "arith": (118, 7.0)},  # mean 8.0, lists -10.0 pts
    0.6: {"lists": (159, 7.0), "arith": (120, 5.0)},  # mean 6.0, lists -0.5 pt
    0.7: {"lists": (160, 8.0), "arith": (117, 5.0)},  # mean 6.5, arith -1.5 pts
    0.8: {"lists": (161, 9.5), "arith": (121, 1.0)},  # mean 5.25 (the best lists TPF alone)
    0.9: {"lists": (162, 2.0), "arith": (122, 2.0)},  # mean 2.0, better than vanilla
}
# what the table says, per tolerance in points
ELIGIBLE = {1.0: [0.6, 0.8, 0.9], 2.0: [0.6, 0.7, 0.8, 0.9], 20.0: [0.5, 0.6, 0.7, 0.8, 0.9],
            0.0: [0.8, 0.9]}
BEST = {1.0: 0.6, 2.0: 0.7, 20.0: 0.5, 0.0: 0.8}
GEN = 32


class FakeTask:
    def __init__(self, name):
        self.name = name

    def problems(self, split):
        assert split == "dev"
        return [f"{self.name}-{i}" for i in range(N)]


def fake_run_cell(model, tokenizer, task, problems, config, batch_size, world):
    assert len(problems) == N
    if config.policy == "fixed":  # vanilla: one token per step
        assert config.k == 1
        return CellResult(N, VANILLA_CORRECT[task.name], N * GEN, N * GEN, 1.0)
    correct, tpf = SWEEP[config.tau][task.name]
    nfe = 1000
    return CellResult(N, correct, nfe, int(tpf * nfe), 1.0)


@pytest.fixture
def fake_sweep(monkeypatch):
    import stdec.tasks
    import stdec.tasks.lengths

    monkeypatch.setattr(tune_module, "run_cell", fake_run_cell)
    monkeypatch.setattr(stdec.tasks, "get_task", lambda name, *a, **k: FakeTask(name))
    lengths = {t: {"gen_length": GEN, "long_gen_length": 4 * GEN} for t in VANILLA_CORRECT}
    monkeypatch.setattr(stdec.tasks.lengths, "gen_lengths", lambda *a, **k: lengths)
    monkeypatch.setattr(stdec.tasks.lengths, "read_gen_lengths", lambda *a, **k: lengths)


GRID = {"tau": sorted(SWEEP)}


@pytest.mark.parametrize("points", sorted(ELIGIBLE))
def test_tune_picks_the_fastest_setting_within_the_tolerance(fake_sweep, points):
    result = tune(None, None, "threshold", GRID, ["lists", "arith"], tolerance=points / 100,
                  progress=False)
    assert result.vanilla["accuracy"] == {"lists": 0.8, "arith": 0.6}
    assert result.vanilla["mean_tpf"] == 1.0
    rows = {r["params"]["tau"]: r for r in result.rows}
    assert sorted(rows) == sorted(SWEEP)
    for tau, per in SWEEP.items():
        assert rows[tau]["accuracy"] == {t: c / N for t, (c, _) in per.items()}
        assert rows[tau]["mean_tpf"] == pytest.approx(sum(v for _, v in per.values()) / 2)
        assert rows[tau]["holds_accuracy"] == (tau in ELIGIBLE[points]), tau
    assert result.best is rows[BEST[points]]
    assert result.best["label"] == f"threshold:tau={BEST[points]}"


def test_no_setting_holds_accuracy(fake_sweep, monkeypatch):
    monkeypatch.setitem(VANILLA_CORRECT, "lists", 190)  # 95 %: every setting is 14+ pts lower
    result = tune(None, None, "threshold", GRID, ["lists", "arith"], progress=False)
    assert result.best is None and not any(r["holds_accuracy"] for r in result.rows)
    assert "best threshold setting on dev: none held accuracy" in report(result).splitlines()


@pytest.mark.parametrize("points", [1.0, 2.0])
def test_cli_tolerance_is_in_points(fake_sweep, monkeypatch, capsys, points, tmp_path):
    import stdec

    monkeypatch.setattr(stdec, "load", lambda *a, **k: (SimpleNamespace(), SimpleNamespace()))
    out = tmp_path / "tune.json"
    assert main(["tune", "threshold", "--model", str(tmp_path), "--tasks", "lists,arith",
                 "--grid", "tau=" + ",".join(map(str, sorted(SWEEP))), "--tolerance",
                 str(points), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"best threshold setting on dev: threshold:tau={BEST[points]}" in text.splitlines()
    marks = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").rsplit(" | ", 1)[1]
             for line in text.splitlines() if line.startswith("| threshold")}
    want = {f"threshold:tau={t}": "best" if t == BEST[points] else
            "yes" if t in ELIGIBLE[points] else "no" for t in SWEEP}
    assert marks == want
    # the report lists the sweep fastest first, after the vanilla baseline
    order = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines()
             if line.startswith("| fixed") or line.startswith("| threshold")]
    assert order == ["fixed:k=1", "threshold:tau=0.5", "threshold:tau=0.7", "threshold:tau=0.6",
                     "threshold:tau=0.8", "threshold:tau=0.9"]
    saved = json.loads(out.read_text())
    assert saved["best"]["label"] == f"threshold:tau={BEST[points]}"
