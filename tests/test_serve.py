"""`stdec serve` through the real openai client, against a server on a free loopback port."""

import gc
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import stdec
import stdec.api
import stdec.cli
from stdec.decoding.config import DecodeConfig, build
from stdec.errors import StdecError
from stdec.serve import ServerConfig, bind, create_app, uvicorn_server
from stdec.serve.access import LOG

PROMPTS = ["Sort the list [3, 1, 2].", "Reverse the list [4, 5, 6, 7].",
           "Tom has 3 apples and buys 4 more. How many apples does he have?"]
DEFAULTS = DecodeConfig(policy="threshold", cache="dual", gen_length=32, block_length=16)


@pytest.fixture(scope="module")
def testbed():
    return stdec.load("testbed", device="cpu")


def start(testbed, **kw):
    """A server on a thread, once it is ready (warmed up)."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(*testbed, ServerConfig(name="testbed", defaults=DEFAULTS, **kw),
                            drain_s=1.0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    while not server.started or httpx.get(url + "/ready").status_code != 200:
        time.sleep(0.02)
    return server, thread, url


def stop(server, thread):
    server.should_exit = True
    thread.join(10)


def scrape(url: str, key: str = "none") -> dict[str, float]:
    """/metrics through prometheus-client's own parser: {sample{labels}: value}."""
    out, auth = {}, {"Authorization": f"Bearer {key}"}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", headers=auth).text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


STEPS = "stdec_step_duration_seconds_count"
LATENCY = "stdec_e2e_request_latency_seconds_count"
# a request that cannot end by itself for 128 steps: one token a step, none after EOS
SLOW = {"max_tokens": 128, "policy": "fixed", "cache": "none", "stop_at_eos": False}


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
    (dict(extra_body={"compat": "fast-dllm", "cache": "dual", "policy": "threshold"}), 400,
     "for Dream"),
    (dict(max_tokens=0), 400, "max_tokens must be at least 1"),
    (dict(max_tokens=5000), 400, "exceed the model's length 1024"),
    (dict(messages=[]), 400, "messages is empty"),
    (dict(model="gpt-4"), 404, "model 'gpt-4' does not exist"),
    (dict(extra_body={"colour": 1}), 400, "unknown field 'colour'"),
    # OpenAI's own fields: honoured, or refused by name when not at their neutral value
    (dict(top_p=0.5), 400, "top_p 0.5 is not supported"),
    (dict(presence_penalty=0.5), 400, "presence_penalty 0.5 is not supported"),
    (dict(logit_bias={"5": 1}), 400, "logit_bias {\"5\": 1} is not supported"),
    (dict(logprobs=True, top_logprobs=3), 400, "top_logprobs 3 asks for alternatives"),
    (dict(logprobs=True, top_logprobs=1, temperature=0.5), 400, "send top_logprobs 0."),
    (dict(top_logprobs=2), 400, "top_logprobs needs logprobs true"),
    (dict(logprobs=True, stream=True), 400, "logprobs are given with whole answers only"),
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


# ---- limits, admission, hang-ups ----

def raw_post(url: str, path: str, body: dict) -> socket.socket:
    """A request sent on a bare socket, so that the test can hang up whenever it likes."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_admission_takes_free_slots_plus_the_queue_then_says_429(testbed):
    server, thread, url = start(testbed, max_batch=4, max_queue=2, timeout=60)
    body = {"model": "testbed", "messages": [{"role": "user", "content": PROMPTS[0]}],
            "stream": True, **SLOW}

    def open_stream(_):
        client = httpx.Client(timeout=60)
        r = client.send(client.build_request("POST", url + "/v1/chat/completions", json=body),
                        stream=True)
        lines = r.iter_lines()  # kept: a dropped iterator would close the connection
        if r.status_code == 200:
            next(lines)  # admitted: the first chunk comes at once
        return client, r, lines

    with ThreadPoolExecutor(6) as pool:  # 4 free slots + a queue of 2, sent at once
        held = list(pool.map(open_stream, range(6)))
    try:
        assert [r.status_code for _, r, _ in held] == [200] * 6
        deadline = time.monotonic() + 30
        while ((m := scrape(url))["stdec_active_slots"], m["stdec_waiting_requests"]) != (4, 2):
            assert time.monotonic() < deadline, m  # the engine takes them at its next step
            time.sleep(0.02)
        # one more is one too many: exactly F + Q are taken (`>=`, not `>`)
        extra = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False},
                           timeout=60)
        assert extra.status_code == 429 and extra.headers["Retry-After"] == "1"
        assert "the server is full" in extra.json()["error"]["message"]
        assert scrape(url)['stdec_requests_total{outcome="rejected"}'] == 1
    finally:
        for client, r, _ in held:
            r.close()
            client.close()
    deadline = time.monotonic() + 30
    while (m := scrape(url))["stdec_active_slots"] or m["stdec_waiting_requests"]:
        assert time.monotonic() < deadline, m
        time.sleep(0.05)
    assert m['stdec_requests_total{outcome="cancelled"}'] == 6 and m[LATENCY] == 6
    stop(server, thread)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_cancels_its_request_at_once(testbed, stream):
    server, thread, url = start(testbed, max_batch=2, timeout=60)
    try:
        before = scrape(url)[STEPS]
        body = {"model": "testbed", "messages": [{"role": "user", "content": PROMPTS[0]}],
                "stream": stream, **SLOW}
        sock = raw_post(url, "/v1/chat/completions", body)
        while (m := scrape(url))[STEPS] < before + 2:  # running: 2 of its 128 steps taken
            time.sleep(0.01)
        assert m["stdec_active_slots"] == 1
        sock.close()
        hung_up = scrape(url)[STEPS]
        # its slot frees within a few steps, long before its 128 steps could end it
        while (m := scrape(url))["stdec_active_slots"]:
            assert m[STEPS] < hung_up + 6, "the request was not cancelled"
            time.sleep(0.01)
        assert m['stdec_requests_total{outcome="cancelled"}'] == 1 and m[LATENCY] == 1
        assert m['stdec_requests_total{outcome="completed"}'] == 0
    finally:
        stop(server, thread)


# another process, as a client would be: it sends a 20 MB prompt (built before any timing;
# http.client's send lets go of the GIL) and meanwhile asks /health again and again
BIG_PROMPT = """import http.client, json, sys, threading, time
host, port = sys.argv[1].removeprefix("http://").split(":")
body = json.dumps({"model": "testbed", "prompt": "hello " * ((20 << 20) // 6)}).encode()
out = {}

def big():
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    out.update(status=r.status, message=json.loads(r.read())["error"]["message"])

thread = threading.Thread(target=big)
probe, waits = http.client.HTTPConnection(host, int(port), timeout=10), []
thread.start()
while thread.is_alive():
    start = time.perf_counter()
    probe.request("GET", "/health")
    assert probe.getresponse().read().startswith(b'{"status":"ok"')
    waits.append(time.perf_counter() - start)
print(json.dumps({**out, "polls": len(waits), "slowest": max(waits)}))"""


def test_a_20_mb_prompt_gets_413_while_health_answers_within_100_ms(testbed):
    server, thread, url = start(testbed, max_prompt_tokens=16)
    gc.collect()  # as `stdec serve` does after startup: a full pass over this test process's
    gc.freeze()  # heap would stall every thread, /health's too, for up to half a second
    try:
        slowest = []
        for _ in range(3):  # a machine other jobs load may stall any thread once; best of 3
            run = subprocess.run([sys.executable, "-c", BIG_PROMPT, url], capture_output=True,
                                 text=True, timeout=120)
            out = json.loads(run.stdout)
            assert out["status"] == 413 and out["message"] == \
                "the prompt has 20971518 characters, too many for this server's limit of 16 " \
                "prompt tokens."
            assert out["polls"] > 1
            slowest.append(out["slowest"])
            if slowest[-1] < 0.1:
                break
        assert min(slowest) < 0.1, slowest
        r = httpx.post(url + "/v1/completions", json={"model": "testbed",
                                                      "prompt": " ".join(PROMPTS)})
        assert r.status_code == 413 and r.json()["error"]["message"].endswith(
            " tokens; this server takes at most 16.")
        assert scrape(url)['stdec_requests_total{outcome="invalid"}'] == len(slowest) + 1
    finally:
        gc.unfreeze()
        stop(server, thread)


def test_a_prompt_limit_the_model_cannot_take_is_refused(testbed):
    config = ServerConfig(name="testbed", defaults=DEFAULTS, max_prompt_tokens=1024)
    with pytest.raises(StdecError, match="more than this model takes .1023"):
        create_app(*testbed, config)


# ---- observability, access ----

def test_metrics_parse_and_the_latency_histogram_counts_every_request(testbed, url, client):
    before = scrape(url)
    chat = client.chat.completions.create(model="testbed", max_tokens=32,
                                          messages=[{"role": "user", "content": PROMPTS[0]}])
    text = client.completions.create(model="testbed", prompt=PROMPTS[1], max_tokens=32)
    chunks = list(client.completions.create(model="testbed", prompt=PROMPTS[2], max_tokens=32,
                                            stream=True, stream_options={"include_usage": True}))
    tokens = (chat.usage.completion_tokens + text.usage.completion_tokens
              + chunks[-1].usage.completion_tokens)
    after = scrape(url)

    def grew(name):
        return after[name] - before.get(name, 0)

    assert grew(LATENCY) == 3 and grew('stdec_requests_total{outcome="completed"}') == 3
    for name in ("stdec_time_to_first_token_seconds", "stdec_request_queue_time_seconds"):
        assert grew(name + "_count") == 3 and after[name + '_bucket{le="+Inf"}'] == \
            after[name + "_count"]
    assert grew("stdec_generated_tokens_total") == tokens > 0
    assert grew(STEPS) >= 3 and grew("stdec_rows_per_step_count") == grew(STEPS)
    assert grew("stdec_forwards_total") >= grew(STEPS)
    assert after["stdec_rows_rerun_alone_total"] == 0
    assert after["stdec_active_slots"] == after["stdec_waiting_requests"] == 0
    assert after["stdec_max_slots"] == 4
    families = {f.name: f.type for f in text_string_to_metric_families(
        httpx.get(url + "/metrics").text)}
    assert families["stdec_requests"] == "counter"
    assert families["stdec_step_duration_seconds"] == "histogram"


def test_api_key_request_id_and_access_log(testbed):
    server, thread, url = start(testbed, api_key="sesame")
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        ask = dict(model="testbed", max_tokens=32,
                   messages=[{"role": "user", "content": PROMPTS[0]}])
        for key in ("none", "sesame!"):
            wrong = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as err:
                wrong.chat.completions.create(**ask)
            assert err.value.status_code == 401
            assert err.value.body["message"].startswith("the API key is wrong;")
        r = httpx.get(url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.json()["error"]["message"].startswith("no API key was sent;")
        assert len(r.headers["x-request-id"]) == 32  # made here
        for open_path in ("/health", "/ready"):
            assert httpx.get(url + open_path).status_code == 200
        right = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0,
                              default_headers={"X-Request-ID": "trace-42"})
        raw = right.chat.completions.with_raw_response.create(**ask)
        assert raw.status_code == 200 and raw.headers["x-request-id"] == "trace-42"
        tokens = raw.parse().usage.completion_tokens
        assert scrape(url, "sesame")['stdec_requests_total{outcome="unauthorized"}'] == 3
    finally:
        stop(server, thread)
        LOG.removeHandler(handler)
    assert f"trace-42 POST /v1/chat/completions 200 {tokens} tokens" in "\n".join(lines)
    assert sum(" 401 0 tokens " in line for line in lines) == 3


def test_ready_says_503_until_the_warm_up_decode_is_done(testbed):
    app = create_app(*testbed, ServerConfig(name="testbed", defaults=DEFAULTS))
    client = TestClient(app)  # no lifespan yet: the engine's thread has not started
    assert client.get("/health").status_code == 200
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["error"]["message"] == \
        "the model is warming up; retry in a second."
    with TestClient(app) as client:  # the lifespan starts the engine, which warms up
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.get("/ready").json() == {"status": "ready"}


# ---- the command line: a port it cannot have ----

@pytest.mark.parametrize("port, words", [("99999", "port must be an integer in 1..65535"),
                                         (None, "is in use; stop what listens there")])
def test_a_bad_port_is_refused_in_one_sentence_before_the_model_loads(monkeypatch, capsys,
                                                                      port, words):
    def no_load(*args, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(stdec.api, "load", no_load)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = port or str(taken.getsockname()[1])
        assert stdec.cli.main(["serve", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err, err


def test_logprobs_are_the_log_of_each_tokens_commit_confidence(testbed, client):
    model, tok = testbed
    out = client.completions.create(model="testbed", prompt=PROMPTS[2], max_tokens=32,
                                    logprobs=0)
    lp = out.choices[0].logprobs
    n = out.usage.completion_tokens
    alone = stdec.generate(model, tok, PROMPTS[2], build({"trace": True}, DEFAULTS.options()))
    expected = alone.trace.confidence[0, :n].log().tolist()
    assert len(lp.token_logprobs) == n > 0 and lp.top_logprobs is None
    assert lp.token_logprobs == pytest.approx(expected, abs=1e-6)
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset[0] == 0 and lp.text_offset[-1] == len(out.choices[0].text) - \
        len(lp.tokens[-1])
    # chat, greedy: the one alternative asked for is the committed token itself
    chat = client.chat.completions.create(
        model="testbed", max_tokens=32, logprobs=True, top_logprobs=1,
        messages=[{"role": "user", "content": PROMPTS[0]}])
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(c.top_logprobs[0].token == c.token and c.top_logprobs[0].logprob == c.logprob
               and c.logprob <= 0 for c in content)
    plain = client.chat.completions.create(model="testbed", max_tokens=32,
                                           messages=[{"role": "user", "content": PROMPTS[0]}])
    assert plain.choices[0].logprobs is None
