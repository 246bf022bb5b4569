"""The command line as a new user meets it, through a real subprocess: every refused input is
one sentence on stderr with exit status 2 (no traceback, no usage dump), and --help and
refused options do not load torch."""

import os
import subprocess
import sys

import pytest

from stdec.decoding.config import POLICY_NAMES

CASES = [
    # (argv, words the one sentence must contain)
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["generate"], "required: prompt"),
    (["generate", b"caf\xe9 \xff"], "not valid UTF-8 (byte 0xe9"),
    (["generate", "   "], "prompt is empty"),
    (["generate", "hi", "--policy", "greedy"], "invalid choice: 'greedy'"),
    (["generate", "hi", "--tau", "x"], "--tau takes a number, got 'x'"),
    (["generate", "hi", "--gen-length", "1.5"], "--gen-length takes an integer"),
    (["generate", "hi", "--policy", "threshold", "--tau", "1.5"],
     "tau must be in (0, 1], got 1.5"),
    (["generate", "hi", "--policy", "stdec", "--tau", "0.5"],
     "tau does not apply to policy stdec; stdec's options are tau_high, tau_low, sigma, rho, "
     "window"),
    (["generate", "hi", "--policy", "threshold", "--tau-high", "0.5"],
     "tau_high does not apply to policy threshold; threshold's options are tau"),
    (["generate", "hi", "--gen-length", "0"], "gen_length must be a positive integer"),
    (["generate", "hi", "--model", "/no/such/model"], "is not a folder"),
    (["generate", "hi", "--model", "{file}"], "is a file"),
    (["generate", "hi", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["generate", "hi", "--dtype", "fp8"], "invalid choice: 'fp8'"),
    (["generate", "hi", "--quantize", "int3"], "invalid choice: 'int3'; choose from 'int8', "
     "'int4'"),
    (["generate", "hi", "--quantize-head"], "no quantize mode is set"),
    (["serve", "--quantize-head"], "no quantize mode is set"),
    (["bench", "--quantize-head"], "no quantize mode is set"),
    (["generate", "hi", "--quantize-embeddings"], "no quantize mode is set"),
    (["tune", "stdec", "--quantize-embeddings"], "no quantize mode is set"),
    (["tune", "stdec", "--quantize", "fp4"], "invalid choice: 'fp4'"),
    (["bench", "--tasks", ""], "--tasks needs at least one value"),
    (["bench", "--tasks", ","], "--tasks needs at least one value"),
    (["bench", "--tasks", "chess"], "unknown task 'chess'"),
    (["bench", "--tasks", "gsm8k={dir}/none.jsonl"], "does not exist"),
    (["bench", "--cache", "full"], "unknown cache 'full'; choose among none, prefix, dual, dkv"),
    (["bench", "--lengths", "medium"], "unknown length 'medium'; choose among standard, long"),
    (["bench", "--eos-stop", "maybe"], "--eos-stop got 'maybe'"),
    (["bench", "--limit", "0"], "limit must be a positive integer, got 0"),
    (["bench", "--repeats", "x"], "--repeats takes an integer, got 'x'"),
    (["bench", "--split", "val"], "unknown split 'val'"),
    (["bench", "--policies", "stdec:rho=2"], "rho must be in (0, 1]"),
    (["bench", "--policies", "greedy"], "unknown policy 'greedy'"),
    (["bench", "--out", "{file}"], "is a file"),
    (["viz", "hi", "--out", "{dir}/picture.txt"], "must end in .png or .svg or .pdf"),
    (["viz", "hi", "--out", "{dir}/missing/picture.png"], "does not exist"),
    (["viz", "hi", "--out", "{dir}"], "must end in"),
    (["tune", "greedy"], "invalid choice: 'greedy'"),
    (["tune", "stdec", "--tasks", ","], "--tasks needs at least one value"),
    (["tune", "stdec", "--out", "{file}"], "must end in .json"),
    (["tune", "stdec", "--out", "{json}"], "already exists"),
    (["tune", "stdec", "--tolerance", "-1"], "--tolerance is in accuracy points"),
    (["tune", "stdec", "--grid", "tau_high=2"], "tau_high must be in (0, 1]"),
    (["random-model", "{dir}"], "is not empty"),
    (["random-model", "{file}"], "is a file"),
    (["train", "--steps", "x"], "--steps takes an integer"),
    (["train", "--out", "{file}"], "is a file"),
    (["train", "--tasks", "gsm,vision"], "train it alone with --tasks vision"),
    (["train", "--tasks", "vision", "--mixture", "gsm=1"], "--mixture is not an option of the "
     "vision recipe"),
    (["train", "--patch-size", "8"], "--patch-size sets the vision testbed's recipe"),
    (["train", "--tasks", "vision", "--init", "testbed", "--d-model", "64"],
     "--d-model comes from --init's checkpoint"),
    (["serve", "--replicas", "0"], "--replicas takes a positive integer, got 0"),
]


def run(argv, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "stdec", *argv], capture_output=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "a-file.txt").write_text("x")
    (root / "old.json").write_text("{}")
    return {"{dir}": str(root), "{file}": str(root / "a-file.txt"),
            "{json}": str(root / "old.json")}


def _fill(arg, places):
    if isinstance(arg, bytes):
        return arg
    for key, value in places.items():
        arg = arg.replace(key, value)
    return arg


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(
    a if isinstance(a, str) else repr(a) for a in c[0]) or "(nothing)" for c in CASES])
def test_every_refusal_is_one_sentence_with_status_2(argv, words, places):
    proc = run([_fill(a, places) for a in argv], cwd=places["{dir}"])
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one sentence: no usage dump, no traceback
    assert lines[0].startswith("stdec") and ": error: " in lines[0], err
    assert lines[0].endswith((".", ").")), err
    assert words in lines[0], err
    assert proc.stdout == b""


def test_help_and_refusals_do_not_load_torch():
    code = ("import sys\nfrom stdec.cli import main\n"
            "for argv in (['--help'], ['bench', '--help'], ['generate', '--help'],\n"
            "             ['viz', '--help'], ['tune', '--help'], ['random-model', '--help'],\n"
            "             ['train', '--help'], ['serve', '--help'],\n"
            "             ['bench', '--tasks', ','],\n"
            "             ['generate', 'hi', '--policy', 'threshold', '--tau', '2'],\n"
            "             ['generate', 'hi', '--quantize-head']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


def test_replicas_without_ray_are_refused_before_the_model_loads():
    code = ("import sys\nsys.modules['ray'] = sys.modules['ray.serve'] = None  # not installed\n"
            "from stdec.cli import main\n"
            "assert main(['serve', '--replicas', '2']) == 2\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stderr.decode() == ("stdec: error: --replicas 2 runs the replicas on Ray Serve, "
                                    "which is not installed here; pip install 'stdec[ray]'.\n")


def test_help_states_each_default_once():
    proc = run(["bench", "--help"])
    text = " ".join(proc.stdout.decode().split("options:", 1)[1].split())
    assert proc.returncode == 0
    for option in ("--limit", "--batch-size", "--out", "--repeats", "--split", "--seed"):
        part = text.split(option, 1)[1].split(" --", 1)[0]
        assert part.count("default") == 1, (option, part)


def test_every_registered_rule_resolves_to_its_function():
    from stdec.decoding import policies, registry

    assert POLICY_NAMES == registry.names()
    for name in POLICY_NAMES:
        assert registry.get(name).resolve() is getattr(policies, name)


def test_vision_training_options_cover_its_recipe():
    from dataclasses import fields

    from stdec.cli import vision_only_fields, vision_shared
    from stdec.testbed.config import TrainConfig, VisionTrainConfig

    text = {f.name for f in fields(TrainConfig)}
    assert vision_shared() <= text and not {f.name for f in vision_only_fields()} & text
    assert {f.name for f in fields(VisionTrainConfig)} == \
        (vision_shared() - {"tasks"}) | {f.name for f in vision_only_fields()}


@pytest.mark.parametrize("flag, note", [
    (["--no-chat"], "--no-chat gave it the bare prompt"), ([], "committed its end token first")])
def test_an_empty_answer_says_why(checkpoint, monkeypatch, capsys, flag, note):
    from types import SimpleNamespace

    import stdec
    from stdec.cli import main

    stats = stdec.RowStats(nfe=1, gen_tokens=0, tpf=0.0, wall_time=0.1, tokens_per_s=0.0)
    monkeypatch.setattr(stdec, "load", lambda *a, **k: (
        SimpleNamespace(), SimpleNamespace(chat_template="{{ messages }}")))
    monkeypatch.setattr(stdec, "generate", lambda *a, **k: SimpleNamespace(
        texts=[""], stats=[stats], trace=None))
    assert main(["generate", "Sort [2, 1].", "--model", str(checkpoint), *flag]) == 0
    assert note in capsys.readouterr().err
