"""The harness end to end on a tiny random model: records, files, plots, tune, viz."""

import json

import pytest

from stdec import StdecError
from stdec.bench import RECORD_FIELDS, BenchConfig, parse_policy, run_bench
from stdec.cli import main
from stdec.viz import pareto_front

SMALL = dict(tasks=("lists",), limit=5, gen_length=32, long_gen_length=64, batch_size=4,
             caches=("none", "dual"), stop_at_eos=(True, False), repeats=2)


def test_bench_writes_complete_results(checkpoint, tmp_path):
    cfg = BenchConfig(model=str(checkpoint), out=str(tmp_path),
                      policies=("threshold:tau=0.5", "stdec", "fixed:k=4"), **SMALL)
    records = run_bench(cfg, progress=False)
    # 2 lengths x 2 caches x 2 EOS settings x (vanilla + 3 settings)
    assert len(records) == 2 * 2 * 2 * 4
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(records))
    for r in saved:
        assert set(r) == set(RECORD_FIELDS)
        assert r["n"] == 5 and 0 <= r["accuracy"] <= 1 and r["nfe"] > 0 and r["tpf"] > 0
        assert r["tokens_per_s"] > 0 and r["latency_s"] > 0 and r["hardware"]
        assert len(r["wall_s"]) == 2 and r["spread"] >= 0 and r["timed_n"] == 5
        assert len(r["cpu_s"]) == 2 and r["tokens_per_cpu_s"] > 0
        assert r["threads"] >= 1 and r["cpu_count"] >= 1 and r["repeats"] == 2
        assert r["versions"]["torch"] and r["git_commit"]
    vanilla = [r for r in saved if r["label"] == "fixed:k=1"]
    assert all(r["speedup_nfe"] == 1 and r["speedup_tokens_per_s"] == 1 for r in vanilla)
    fast = [r for r in saved if r["label"] == "fixed:k=4" and not r["stop_at_eos"]]
    assert all(r["speedup_nfe"] == 4 and r["tpf"] == 4 for r in fast)
    assert {r["gen_length"] for r in saved} == {32, 64}
    md = (tmp_path / "results.md").read_text()
    assert "| lists |" in md
    # a legend line for every column of the table
    head = next(line for line in md.splitlines() if line.startswith("| task"))
    for column in head.strip("| ").split(" | "):
        assert f"- **{column}**: " in md, column
    assert not list(tmp_path.glob(".*tmp")) and not list(tmp_path.glob(".pareto*"))
    assert (tmp_path / "pareto.png").stat().st_size > 10_000


def test_every_timed_pass_covers_every_problem_at_batch_size_1(checkpoint, tmp_path,
                                                                 monkeypatch):
    # tokens/s is never one problem's: each pass decodes all 5 problems in one engine run
    import importlib

    evaluate = importlib.import_module("stdec.tasks.evaluate")  # the module, not its function
    runs, real = [], evaluate.generate_problems

    def spy(model, tokenizer, problems, config, **kw):
        runs.append((len(problems), kw["batch_size"]))
        return real(model, tokenizer, problems, config, **kw)

    monkeypatch.setattr(evaluate, "generate_problems", spy)
    cfg = BenchConfig(model=str(checkpoint), out=str(tmp_path), policies=("stdec",),
                      lengths=("standard",), **{**SMALL, "caches": ("dual",),
                                                 "stop_at_eos": (True,), "batch_size": 1})
    records = run_bench(cfg, progress=False)
    assert runs == [(5, 1)] * 2 * 2  # 2 settings x 2 passes
    for r in records:
        assert r["timed_n"] == r["n"] == 5
        # greedy: every pass generates the accuracy pass's tokens, over the median seconds
        tokens = r["tpf"] * r["nfe"] * r["n"]
        wall = sorted(r["wall_s"])[0] / 2 + sorted(r["wall_s"])[1] / 2
        assert r["tokens_per_s"] == pytest.approx(tokens / wall)
        assert r["latency_s"] == pytest.approx(wall / 5)
        cpu = sum(r["cpu_s"]) / 2
        assert r["tokens_per_cpu_s"] == pytest.approx(tokens / cpu)


def test_same_seed_same_accuracy_and_nfe(checkpoint, tmp_path):
    cfg = BenchConfig(model=str(checkpoint), policies=("stdec",), lengths=("standard",),
                      **{**SMALL, "caches": ("dual",), "stop_at_eos": (True,)})
    a = run_bench(BenchConfig(**{**cfg.__dict__, "out": str(tmp_path / "a")}), progress=False)
    b = run_bench(BenchConfig(**{**cfg.__dict__, "out": str(tmp_path / "b")}), progress=False)
    assert [(r["accuracy"], r["nfe"]) for r in a] == [(r["accuracy"], r["nfe"]) for r in b]


@pytest.mark.parametrize("spec, message", [
    ("greedy", "unknown policy 'greedy'"),
    ("threshold:tau", "bad policy parameter 'tau'"),
    ("threshold:sigma=2", "bad policy parameter 'sigma=2'.*key among tau"),
    ("stdec:window=3,sigma=1.5", None),
    ("stdec:tau_high=2", "tau_high must be in (0, 1]"),
    ("stdec:rho=x", "rho in 'stdec:rho=x' must be a number"),
    ("fixed:k=0", "k must be a positive integer, got 0"),
    ("fixed:tau=0.5", "bad policy parameter 'tau=0.5'"),
])
def test_policy_specs(spec, message):
    if message is None:
        assert parse_policy(spec).label == spec
        return
    with pytest.raises(StdecError, match=message.replace("(0, 1]", r"\(0, 1\]")):
        parse_policy(spec)


def test_bad_bench_options():
    with pytest.raises(StdecError, match="unknown cache 'full'"):
        BenchConfig(caches=("full",))
    with pytest.raises(StdecError, match="fixed:k=3 must divide block_length"):
        BenchConfig(policies=("fixed:k=3",))
    with pytest.raises(StdecError, match="unknown task 'chess'"):
        BenchConfig(tasks=("chess",))
    with pytest.raises(StdecError, match="gen_length must be a positive integer, got 0"):
        BenchConfig(gen_length=0)


def test_cli_bad_bench_options_are_one_sentence(capsys):
    assert main(["bench", "--eos-stop", "yes"]) == 2
    assert capsys.readouterr().err.strip() == (
        "stdec: error: --eos-stop got 'yes'; choose among on, off.")
    assert main(["bench", "--policies", "stdec:rho=2"]) == 2
    assert "rho must be in (0, 1]" in capsys.readouterr().err


def test_tune_reads_only_the_dev_split(checkpoint, monkeypatch, capsys):
    from stdec.tasks.base import Task

    splits = []
    real = Task.problems

    def spy(self, split):
        splits.append(split)
        return real(self, split)

    monkeypatch.setattr(Task, "problems", spy)
    code = main(["tune", "threshold", "--model", str(checkpoint), "--tasks", "lists",
                 "--grid", "tau=0.5,0.9", "--limit", "4", "--quiet"])
    assert code == 0
    assert "dev" in splits and "test" not in splits
    out = capsys.readouterr().out
    assert "threshold:tau=0.5" in out and "best threshold setting on dev" in out


@pytest.mark.parametrize("tty, no_color, coloured", [
    (True, "", True), (True, "1", False), (False, "", False)])
def test_viz_writes_picture_and_colours_only_a_terminal(checkpoint, tmp_path, capsys, monkeypatch,
                                                         tty, no_color, coloured):
    import stdec.viz

    monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(stdec.viz, "use_colour", lambda stream, real=stdec.viz.use_colour:
                        real(type("T", (), {"isatty": lambda self: tty})()))
    png = tmp_path / "order.png"
    code = main(["viz", "Sort the list [3, 1, 2].", "--model", str(checkpoint), "--out",
                 str(png), "--gen-length", "16", "--block-length", "8", "--policy", "threshold",
                 "--tau", "0.5"])
    assert code == 0 and png.stat().st_size > 5_000
    assert ("\033[" in capsys.readouterr().out) is coloured


def test_pareto_front():
    pts = [(1, 90), (2, 85), (3, 80), (2, 70), (0.5, 90)]
    assert pareto_front(pts) == [0, 1, 2]


def test_real_benchmarks_plug_into_bench(checkpoint, tmp_path):
    from pathlib import Path

    data = Path(__file__).parent / "fixtures" / "gsm8k.jsonl"
    cfg = BenchConfig(model=str(checkpoint), out=str(tmp_path), policies=("stdec",),
                      tasks=(f"gsm8k={data}",), caches=("dual",), stop_at_eos=(True,),
                      lengths=("standard",), gen_length=32, batch_size=4)
    records = run_bench(cfg, progress=False)
    assert [(r["task"], r["label"]) for r in records] == [("gsm8k", "fixed:k=1"),
                                                          ("gsm8k", "stdec")]
    assert records[0]["n"] == 4
    with pytest.raises(StdecError, match="gsm8k"):
        BenchConfig(tasks=(f"gsm8k={tmp_path / 'none.jsonl'}",))


def test_tune_grid_checks_whole_settings():
    from stdec.tune import parse_grid

    # tau_low=0.95 is valid beside tau_high=0.99 though not beside the default tau_high (0.9)
    grid = parse_grid("stdec", ["tau_high=0.99", "tau_low=0.95,0.97", "window=2"])
    assert grid == {"tau_high": [0.99], "tau_low": [0.95, 0.97], "window": [2]}
    with pytest.raises(StdecError, match="tau_low"):
        parse_grid("stdec", ["tau_high=0.9,0.99", "tau_low=0.95"])


def test_a_folder_with_results_is_never_written_into(tmp_path):
    from stdec.bench import check_out

    out = tmp_path / "bench"
    assert check_out(out) == out and out.is_dir()  # created now, before any model work
    (out / "results.json").write_text("[1]")
    assert check_out(out) == tmp_path / "bench-2"
    (tmp_path / "bench-2" / "pareto.png").write_text("x")
    assert check_out(out) == tmp_path / "bench-3"
    assert (out / "results.json").read_text() == "[1]"
    (tmp_path / "file").write_text("x")
    with pytest.raises(StdecError, match="is a file"):
        check_out(tmp_path / "file")


def test_a_failure_mid_run_keeps_the_finished_cells(checkpoint, tmp_path, monkeypatch, capsys):
    import stdec.bench as bench

    real, calls = bench._measure_group, []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "_measure_group", second_fails)
    cfg = BenchConfig(model=str(checkpoint), out=str(tmp_path), policies=("stdec",),
                      lengths=("standard",), **{**SMALL, "stop_at_eos": (True,)})
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_bench(cfg, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["cache"] for r in saved] == ["none", "none"]  # the first group, both settings
    err = capsys.readouterr().err
    assert f"stopped after 2 of 4 cells: {tmp_path / 'results.json'} holds the finished" in err


def test_timing_is_flagged_when_spread_is_wide_or_the_machine_busy():
    from stdec.bench import table, timing_flag

    rec = dict(task="lists", length="standard", gen_length=32, cache="dual", stop_at_eos=True,
               label="stdec", accuracy=1.0, nfe=4.0, tpf=8.0, tokens_per_s=100.0,
               latency_s=0.1, speedup_tokens_per_s=2.0, speedup_nfe=4.0, spread=0.05,
               load_avg=0.5, cpu_count=2)
    assert timing_flag(rec) == ""
    assert timing_flag({**rec, "spread": 0.6}) == "spread 60%"
    assert timing_flag({**rec, "load_avg": 3.2}) == "load 3.2 > 2 cores"
    quiet = table([{**rec, "timing_flag": ""}])
    assert "!" not in quiet
    busy = table([{**rec, "timing_flag": timing_flag({**rec, "load_avg": 3.2})}])
    assert "100.0! |" in busy and "2.00x! |" in busy and "4.00x |" in busy
    assert "! load 3.2 > 2 cores" in busy and "unreliable" in busy
