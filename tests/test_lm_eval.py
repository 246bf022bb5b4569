"""The lm-eval adapter on the tiny random model: requests in order, stop strings, options,
the clear loglikelihood error, and a real lm-eval run over a local three-item task."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance

import stdec
import stdec.lm_eval as adapter
from stdec import StdecError
from stdec.lm_eval import StdecLM

PROMPTS = ["Sort the list [3, 1, 2].", "What is 2 + 3?", "Reverse the list [1, 2, 3, 4]."]
OPTIONS = dict(policy="stdec", cache="dual", gen_length=16, block_length=8)
DOCS = [{"question": p, "answer": "[1, 2, 3]"} for p in PROMPTS]


def request(i: int, context: str, gen_kwargs: dict) -> Instance:
    return Instance(request_type="generate_until", doc={}, arguments=(context, gen_kwargs), idx=i)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the tiny model's matmuls gain nothing from threads, and lose much on a shared CPU
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm(checkpoint):
    return StdecLM(pretrained=str(checkpoint), batch_size=2, device="cpu", **OPTIONS)


def test_generate_until_matches_direct_decoding(lm, checkpoint):
    reqs = [request(i, p, {"until": ["\n\n"], "max_gen_toks": 16}) for i, p in enumerate(PROMPTS)]
    texts = lm.generate_until(reqs)
    model, tokenizer = stdec.load(checkpoint)
    want = [stdec.generate(model, tokenizer, p, **OPTIONS).texts[0].split("\n\n")[0]
            for p in PROMPTS]
    assert texts == want


def test_order_stops_and_one_engine_run(lm, monkeypatch):
    calls = []

    def fake_generate_each(model, tokenizer, prompts, configs, *, chat, batch_size, on_finish):
        calls.append((list(prompts), [c.temperature for c in configs], batch_size))
        for i in reversed(range(len(prompts))):  # rows finish in any order
            on_finish(i, f"{prompts[i]} -> ok\n\nrest STOP")

    monkeypatch.setattr(adapter, "generate_each", fake_generate_each)  # what the adapter calls
    kwargs = [{"until": ["\n\n"]}, {"until": "STOP", "temperature": 0.5, "do_sample": True},
              {"until": ["\n\n", "->"], "do_sample": False, "temperature": 0.7}]
    texts = lm.generate_until([request(i, p, k) for i, (p, k) in
                               enumerate(zip(PROMPTS, kwargs, strict=True))])
    assert texts == [f"{PROMPTS[0]} -> ok", f"{PROMPTS[1]} -> ok\n\nrest ", f"{PROMPTS[2]} "]
    # greedy and sampled requests alike: one engine run of batch_size slots, in order
    assert calls == [(PROMPTS, [0.0, 0.5, 0.0], 2)]


def test_loglikelihood_says_use_generate_until(lm):
    req = Instance(request_type="loglikelihood", doc={}, arguments=("2 + 3 =", " 5"), idx=0)
    for method in (lm.loglikelihood, lm.loglikelihood_rolling):
        with pytest.raises(StdecError, match="no token log-likelihoods.*use generate_until"):
            method([req])


def test_model_args_strings_become_typed_config(checkpoint):
    lm = StdecLM.create_from_arg_string(
        f"pretrained={checkpoint},cache=none,gen_length=16,block_length=8,stop_at_eos=false,"
        "tau_high=0.95,window=3,chat=true", {"batch_size": "auto", "device": "cpu"})
    c = lm.config
    assert (c.cache, c.gen_length, c.stop_at_eos, c.tau_high, c.window) == ("none", 16, False,
                                                                            0.95, 3)
    assert lm.chat is True and lm.batch_size == 16
    lm = StdecLM(pretrained=str(checkpoint), policy="threshold", gen_length="32", tau="0.5",
                 chat="false")
    assert (lm.config.gen_length, lm.config.tau, lm.chat) == (32, 0.5, False)
    lm = StdecLM(pretrained=str(checkpoint), policy="fixed", steps="none")
    assert lm.config.steps is None


@pytest.mark.parametrize("options, message", [
    ({"polcy": "stdec"}, "unknown stdec model_args key 'polcy'; the valid keys are .*policy"),
    ({"gen_length": "many"}, "gen_length must be an integer, got 'many'"),
    ({"stop_at_eos": "maybe"}, "stop_at_eos must be true or false"),
    ({"tau_high": "1.5"}, r"tau_high must be in \(0, 1\]"),
])
def test_bad_model_args_fail_before_loading(options, message):
    with pytest.raises(StdecError, match=message):
        StdecLM(pretrained="/no/such/folder", **options)


def write_task(folder, cache_dir, docs=DOCS) -> None:
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "stdec_tiny.yaml").write_text(f"""\
task: stdec_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache_dir}
output_type: generate_until
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")


def test_simple_evaluate_runs_a_local_task(checkpoint, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # what stdec decodes for each question, cut at the task's stop string "\n"; the first
    # doc's gold answer is that text, the others' are not: exact match must be 1/3
    model, tokenizer = stdec.load(checkpoint)
    want = [stdec.generate(model, tokenizer, p, **OPTIONS).texts[0].split("\n")[0]
            for p in PROMPTS]
    docs = [{**DOCS[0], "answer": want[0]}, *DOCS[1:]]
    assert want[1:] != [d["answer"] for d in DOCS[1:]]
    write_task(tmp_path, tmp_path / "hf_cache", docs)
    args = ",".join([f"pretrained={checkpoint}", *(f"{k}={v}" for k, v in OPTIONS.items())])
    out = lm_eval.simple_evaluate(model="stdec", model_args=args, tasks=["stdec_tiny"],
                                  task_manager=TaskManager(include_path=str(tmp_path)),
                                  batch_size=2, device="cpu", log_samples=True)
    assert out["results"]["stdec_tiny"]["sample_len"] == 3
    samples = sorted(out["samples"]["stdec_tiny"], key=lambda s: s["doc_id"])
    assert [s["doc"]["question"] for s in samples] == PROMPTS
    assert [s["resps"][0][0] for s in samples] == want
    assert [s["exact_match"] for s in samples] == [1.0, 0.0, 0.0]
    assert out["results"]["stdec_tiny"]["exact_match,none"] == pytest.approx(1 / 3)


def test_command_line_registers_the_model(checkpoint, tmp_path):
    write_task(tmp_path, tmp_path / "hf_cache")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    args = ",".join([f"pretrained={checkpoint}", *(f"{k}={v}" for k, v in OPTIONS.items())])
    run = subprocess.run(
        [sys.executable, "-m", "stdec.lm_eval", "--model", "stdec", "--model_args", args,
         "--tasks", "stdec_tiny", "--include_path", str(tmp_path), "--batch_size", "3",
         "--device", "cpu", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "stdec_tiny" in run.stdout and "exact_match" in run.stdout
    assert list((tmp_path / "out").rglob("results_*.json"))


def test_prompts_with_several_images_take_pad_mode(lm, monkeypatch):
    from PIL import Image

    seen = []

    def fake_generate_each(model, tokenizer, prompts, configs, *, chat, batch_size, on_finish,
                           images=None):
        seen.append(([c.image_mode for c in configs], [len(i) for i in images]))
        for i in range(len(prompts)):
            on_finish(i, "ok")

    monkeypatch.setattr(adapter, "generate_each", fake_generate_each)
    im = Image.new("RGB", (8, 8))
    reqs = [Instance(request_type="generate_until", doc={}, idx=i,
                     arguments=(p, {"until": ["\n"]}, {"visual": v}))
            for i, (p, v) in enumerate(zip(PROMPTS, [[im, im], im, None], strict=True))]
    assert lm.generate_until(reqs) == ["ok"] * 3
    assert seen == [(["pad", "anyres", "anyres"], [2, 1, 0])]
