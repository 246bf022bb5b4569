"""`stdec serve` through the real openai client, against a server on a free loopback port."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

import stdec
from stdec.decoding.config import DecodeConfig, build
from stdec.serve import ServerConfig, uvicorn_server

PROMPTS = ["Sort the list [3, 1, 2].", "Reverse the list [4, 5, 6, 7].",
           "Tom has 3 apples and buys 4 more. How many apples does he have?"]
DEFAULTS = DecodeConfig(policy="threshold", cache="dual", gen_length=32, block_length=16)


@pytest.fixture(scope="module")
def testbed():
    return stdec.load("testbed", device="cpu")


def start(testbed, **kw):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn_server(*testbed, ServerConfig(name="testbed", defaults=DEFAULTS, **kw),
                            drain_s=1.0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def url(testbed):
    server, thread, url = start(testbed, max_batch=4, max_queue=32, max_body_bytes=8192)
    yield url
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def alone(testbed, prompt, chat, **options):
    model, tok = testbed
    config = build(options, DEFAULTS.options())
    return stdec.generate(model, tok, prompt, config, chat=chat).texts[0]


def test_chat_and_completions_equal_generate_alone(testbed, client):
    chat = client.chat.completions.create(model="testbed", max_tokens=32,
                                          messages=[{"role": "user", "content": PROMPTS[0]}])
    assert chat.choices[0].message.content == alone(testbed, PROMPTS[0], chat=True)
    assert chat.usage.completion_tokens > 0 and chat.model_extra["stdec"]["nfe"] > 0
    text = client.completions.create(model="testbed", prompt=PROMPTS[1], max_tokens=20)
    assert text.choices[0].text == alone(testbed, PROMPTS[1], chat=False, gen_length=20)
    assert text.model_extra["stdec"]["gen_length"] == 20  # blocks of 16 and 4


def test_streams_concatenate_to_the_full_text(client):
    for chat in (True, False):
        if chat:
            kw = dict(messages=[{"role": "user", "content": PROMPTS[2]}])
            create, piece = client.chat.completions.create, lambda c: c.delta.content or ""
            full = create(model="testbed", max_tokens=64, **kw).choices[0].message.content
        else:
            kw = dict(prompt=PROMPTS[2])
            create, piece = client.completions.create, lambda c: c.text
            full = create(model="testbed", max_tokens=64, **kw).choices[0].text
        chunks = list(create(model="testbed", max_tokens=64, stream=True,
                             stream_options={"include_usage": True}, **kw))
        pieces = [piece(c.choices[0]) for c in chunks if c.choices]
        assert "".join(pieces) == full and len([p for p in pieces if p]) >= 1
        assert chunks[-1].usage.completion_tokens > 0
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_extra_body_options_seed_and_stop(testbed, client):
    options = dict(policy="stdec", cache="prefix", tau_high=0.95, tau_low=0.8)
    out = client.chat.completions.create(model="testbed", max_tokens=32, extra_body=options,
                                         messages=[{"role": "user", "content": PROMPTS[0]}])
    assert out.choices[0].message.content == alone(testbed, PROMPTS[0], chat=True, **options)
    assert out.model_extra["stdec"]["policy"] == "stdec"
    sampled = [client.completions.create(model="testbed", prompt=PROMPTS[2], max_tokens=32,
                                         temperature=1.0, seed=7).choices[0].text
               for _ in range(2)]
    assert sampled[0] == sampled[1] == alone(testbed, PROMPTS[2], False, temperature=1.0, seed=7)
    full = alone(testbed, PROMPTS[2], chat=True)
    stop = full.strip()[len(full.strip()) // 2:][:3]
    cut = client.chat.completions.create(model="testbed", max_tokens=32, stop=[stop],
                                         messages=[{"role": "user", "content": PROMPTS[2]}])
    assert cut.choices[0].message.content == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("kw, status, words", [
    (dict(extra_body={"policy": "nope"}), 400, "unknown policy 'nope'"),
    (dict(extra_body={"tau": 1.5}), 400, "tau must be in (0, 1], got 1.5"),
    (dict(max_tokens=0), 400, "max_tokens must be at least 1"),
    (dict(max_tokens=5000), 400, "exceed the model's length 1024"),
    (dict(messages=[]), 400, "messages is empty"),
    (dict(model="gpt-4"), 404, "model 'gpt-4' does not exist"),
    (dict(extra_body={"colour": 1}), 400, "unknown field 'colour'"),
])
def test_bad_requests_get_one_sentence(client, kw, status, words):
    args = {"model": "testbed", "messages": [{"role": "user", "content": "hi"}], **kw}
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**args)
    assert err.value.status_code == status
    message = err.value.body["message"]
    assert words in message and message.count(". ") == 0 and message.endswith(".")


def test_bad_bodies_and_the_server_goes_on(testbed, url, client):
    r = httpx.post(url + "/v1/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["message"] == \
        "the request body is not valid JSON."
    r = httpx.post(url + "/v1/completions", json={"model": "testbed", "prompt": "x" * 9000})
    assert r.status_code == 413 and "limit is 8192" in r.json()["error"]["message"]
    out = client.completions.create(model="testbed", prompt=PROMPTS[0], max_tokens=32)
    assert out.choices[0].text == alone(testbed, PROMPTS[0], chat=False)
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list()] == ["testbed"]


def test_concurrent_requests_equal_generate_alone(testbed, client):
    options = [dict(policy="threshold", cache="none"), dict(policy="stdec", cache="dual"),
               dict(policy="fixed", cache="prefix", steps=16), dict(policy="factor"),
               dict(policy="localleap", cache="dual"), dict(policy="stdec", cache="none")]
    jobs = [(PROMPTS[i % 3], o, i % 2 == 0) for i, o in enumerate(options)]

    def ask(job):
        prompt, extra, chat = job
        if chat:
            return client.chat.completions.create(
                model="testbed", max_tokens=32, extra_body=extra,
                messages=[{"role": "user", "content": prompt}]).choices[0].message.content
        return client.completions.create(model="testbed", prompt=prompt, max_tokens=32,
                                         extra_body=extra).choices[0].text

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(ask, jobs))
    for (prompt, extra, chat), answer in zip(jobs, answers, strict=True):
        assert answer == alone(testbed, prompt, chat, **extra)


def test_canvas_events_show_every_commit(testbed, url):
    body = {"model": "testbed", "prompt": PROMPTS[0], "max_tokens": 32, "stream": True,
            "stdec_canvas": True}
    commits, text = {}, ""
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and line != "data: [DONE]":
                data = json.loads(line[6:])
                if event == "stdec.canvas":
                    commits.update({i: (tok, step) for i, tok, step in data["stdec"]["commits"]})
                else:
                    text += data["choices"][0]["text"]
                event = None
    assert sorted(commits) == list(range(32))
    assert all(step >= 1 for _, step in commits.values())
    assert text == alone(testbed, PROMPTS[0], chat=False)


def test_dropped_streams_free_their_slots_and_full_queue_says_429(testbed):
    server, thread, url = start(testbed, max_batch=2, max_queue=1, timeout=60)
    try:
        chat = {"model": "testbed", "messages": [{"role": "user", "content": PROMPTS[0]}]}
        slow = {**chat, "max_tokens": 128, "stream": True, "policy": "fixed", "cache": "none",
                "stop_at_eos": False}
        for _ in range(2):  # take both slots, read the first chunk, hang up
            with httpx.stream("POST", url + "/v1/chat/completions", json=slow,
                              timeout=60) as r:
                assert r.status_code == 200
                next(r.iter_lines())
        with ThreadPoolExecutor(4) as pool:
            posts = [pool.submit(httpx.post, url + "/v1/chat/completions",
                                 json={**chat, "max_tokens": 32}, timeout=120)
                     for _ in range(4)]
            answers = [f.result() for f in posts]
        statuses = [a.status_code for a in answers]
        assert 429 in statuses and 200 in statuses
        assert all(a.headers["Retry-After"] == "1" for a in answers if a.status_code == 429)
        text = httpx.get(url + "/metrics").text
        assert "stdec_active_slots 0" in text and "stdec_queue_depth 0" in text
        assert 'stdec_requests_total{outcome="cancelled"} 2' in text
        assert f'stdec_requests_total{{outcome="rejected"}} {statuses.count(429)}' in text
    finally:
        server.should_exit = True
        thread.join(10)


def test_shutdown_cancels_what_does_not_drain_with_a_clear_error(testbed):
    server, thread, url = start(testbed, max_batch=2, timeout=60)
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model="testbed", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=256,
        stream=True, extra_body={"policy": "fixed", "cache": "none", "stop_at_eos": False})
    next(iter(stream))
    server.should_exit = True  # drain_s=1: this decode needs 256 steps, so it is cancelled
    with pytest.raises(openai.APIError, match="shutting down"):
        for _ in stream:
            pass
    thread.join(10)
    assert not thread.is_alive()


def test_a_request_past_its_timeout_gets_504(testbed):
    server, thread, url = start(testbed, max_batch=1, timeout=0.5)
    try:
        slow = {"model": "testbed", "messages": [{"role": "user", "content": PROMPTS[0]}],
                "max_tokens": 256, "policy": "fixed", "cache": "none", "stop_at_eos": False}
        r = httpx.post(url + "/v1/chat/completions", json=slow, timeout=60)
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("max_tokens", [1, 8, 33, 100])
def test_max_tokens_is_the_length_decoded(testbed, client, max_tokens):
    # blocks of 16: 33 ends in a block of 1, 100 in one of 4; the text is generate's at that
    # length (fixed, one token a step: no stop at EOS, so every position is decoded)
    options = {"policy": "fixed", "stop_at_eos": False}
    out = client.completions.create(model="testbed", prompt=PROMPTS[0], max_tokens=max_tokens,
                                    extra_body=options)
    assert out.usage.completion_tokens <= max_tokens
    assert out.model_extra["stdec"]["gen_length"] == max_tokens
    assert out.model_extra["stdec"]["nfe"] == max_tokens
    assert out.choices[0].text == alone(testbed, PROMPTS[0], False, gen_length=max_tokens,
                                        **options)
