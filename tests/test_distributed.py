"""Data-parallel `stdec bench` and `stdec tune` under torchrun (2 CPU processes, gloo): the
same accuracy and NFE per cell as one process, and rank 0 alone prints and writes."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch without distributed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], cwd, nproc: int = 1) -> subprocess.CompletedProcess:
    """`python -m stdec ARGS`, under torchrun with `nproc` processes when nproc > 1."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"  # 2 processes on 2 cores: no oversubscription
    cmd = [sys.executable, "-m", "stdec", *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), "-m", "stdec", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_bench_two_ranks_match_one(checkpoint, tmp_path):
    # 5 problems over 2 ranks: rank 0 decodes 3 (two batches), rank 1 decodes 2 (one batch)
    args = ["bench", "--model", str(checkpoint), "--tasks", "lists", "--limit", "5",
            "--gen-length", "32", "--long-gen-length", "64", "--batch-size", "2",
            "--cache", "dual", "--eos-stop", "on", "--policies", "stdec", "--quiet"]
    one = launch([*args, "--out", str(tmp_path / "one")], tmp_path)
    two = launch([*args, "--out", str(tmp_path / "dp")], tmp_path, nproc=2)
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "dp" / "results.json").read_text())
    key = ("task", "length", "gen_length", "label", "n", "accuracy", "nfe", "tpf", "speedup_nfe")
    assert [[r[k] for k in key] for r in a] == [[r[k] for k in key] for r in b]
    assert len(b) == 4 and all(r["n"] == 5 for r in b)
    assert two.stdout.count("| task | length |") == 1  # rank 0 alone prints the table
    assert two.stdout.count("wrote ") == 1
    assert one.stdout.count("| task | length |") == 1


def test_tune_two_ranks_print_once(checkpoint, tmp_path):
    # 3 dev problems: rank 1 gets one
    args = ["tune", "threshold", "--model", str(checkpoint), "--tasks", "lists", "--grid",
            "tau=0.5,0.9", "--limit", "3", "--batch-size", "2", "--quiet"]
    two = launch([*args, "--out", str(tmp_path / "dp.json")], tmp_path, nproc=2)
    one = launch([*args, "--out", str(tmp_path / "one.json")], tmp_path)
    assert two.stdout == one.stdout
    assert two.stdout.count("best threshold setting on dev") == 1
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "dp.json").read_text())
    assert a["rows"] == b["rows"] and a["vanilla"] == b["vanilla"]


def test_sampled_bench_is_the_same_however_problems_are_batched_or_sharded(checkpoint, tmp_path):
    # temperature 0.7: each problem samples from a seed of its own (run seed, problem id), so
    # one process with batch 5, one with batch 2 and two ranks give the same texts
    import shutil

    from stdec.tasks.evaluate import problem_seed

    sampled = tmp_path / "sampled"  # the checkpoint, its decoding defaults set to sample
    shutil.copytree(checkpoint, sampled)
    (sampled / "decoding_defaults.json").write_text(json.dumps({"temperature": 0.7}))
    args = ["bench", "--model", str(sampled), "--tasks", "lists", "--limit", "5",
            "--gen-length", "32", "--lengths", "standard", "--cache", "dual", "--eos-stop", "on",
            "--policies", "threshold:tau=0.5", "--repeats", "1", "--quiet"]
    runs = {"b5": launch([*args, "--batch-size", "5", "--out", str(tmp_path / "b5")], tmp_path),
            "b2": launch([*args, "--batch-size", "2", "--out", str(tmp_path / "b2")], tmp_path),
            "dp": launch([*args, "--batch-size", "2", "--out", str(tmp_path / "dp")], tmp_path,
                         nproc=2)}
    key = ("label", "n", "accuracy", "nfe", "tpf", "gen_tokens")
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in runs}
    rows = {name: [[r.get(k) for k in key] for r in res] for name, res in results.items()}
    assert rows["b5"] == rows["b2"] == rows["dp"]
    greedy = launch([*args, "--batch-size", "5", "--out", str(tmp_path / "greedy"),
                     "--model", str(checkpoint)], tmp_path)
    assert greedy.returncode == 0
    greedy_rows = [[r.get(k) for k in key]
                   for r in json.loads((tmp_path / "greedy" / "results.json").read_text())]
    assert greedy_rows != rows["b5"]  # the defaults file did make the run sample
    assert problem_seed(0, "lists-1") == problem_seed(0, "lists-1") != problem_seed(1, "lists-1")
