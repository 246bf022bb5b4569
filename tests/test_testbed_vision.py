"""The bundled vision testbed (`testbed-vision`): a small LLaDA-V in the package that loads by
name with no downloads, answers the `vision` task's test problems, and answers a picture sent
to the server through the openai client."""

import pytest
from test_image_entrances import data_url, start

import stdec
from stdec.api import resolve_model_path
from stdec.decoding.config import DecodeConfig
from stdec.models.llada_v import LLaDAVModel
from stdec.tasks import evaluate, get_task
from stdec.testbed.suites.vision import render

VANILLA = DecodeConfig(policy="fixed", steps=32, gen_length=32, block_length=32, cache="dual")
# its card: 95.5% of the 400 test problems with vanilla decoding; the first 24 are a sample
ACCURACY = 0.75


@pytest.fixture(scope="module")
def bundled():
    return stdec.load("testbed-vision", device="cpu")


def test_it_is_a_small_llada_v_in_the_package():
    folder = resolve_model_path("testbed-vision")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 30 * 2**20
    for name in ("README.md", "decoding_defaults.json", "train_log.json"):
        assert (folder / name).is_file(), name


def test_it_answers_test_problems(bundled):
    model, tok = bundled
    assert isinstance(model, LLaDAVModel)
    result = evaluate(model, tok, get_task("vision"), "test", VANILLA, limit=24, batch_size=24)
    assert result.accuracy >= ACCURACY, [(r.output, r.correct) for r in result.records]


def test_the_server_answers_a_picture_through_the_openai_client(bundled):
    task = get_task("vision")
    problem = next(p for p in task.problems("test") if p.meta["scene"]["type"] == "bars")
    picture = {"type": "image_url", "image_url": {"url": data_url(render(problem.meta["scene"]))}}
    question = {"type": "text", "text": problem.prompt.removeprefix("<image>\n")}
    server, thread, client = start(bundled, defaults=VANILLA)
    try:
        reply = client.chat.completions.create(model="m", max_tokens=32, messages=[
            {"role": "user", "content": [picture, question]}])
    finally:
        server.should_exit = True
        thread.join(10)
    assert task.score(problem, reply.choices[0].message.content), reply


def test_stdec_bench_runs_every_rule_on_it(tmp_path):
    from stdec.bench import BenchConfig, run_bench

    cfg = BenchConfig(model="testbed-vision", out=str(tmp_path), tasks=("vision",), limit=4,
                      batch_size=4, lengths=("standard",), repeats=1)
    records = run_bench(cfg, progress=False)
    assert {r["policy"].split(":")[0] for r in records} == {"fixed", "threshold", "stdec"}
    assert all(r["n"] == 4 and r["nfe"] > 0 for r in records)
