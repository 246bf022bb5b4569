"""`stdec serve --replicas N`: two testbed replicas on a local Ray Serve, through the real
openai client. The single-process server's checks (test_serve.py) run here unchanged against
the replicas' one endpoint; then one replica is killed mid-load."""

import os
import signal
import socket
import threading
import time

import httpx
import openai
import pytest
from test_serve import (  # noqa: F401  (the same checks, run on this module's fixtures)
    DEFAULTS,
    PROMPTS,
    test_bad_requests_get_one_sentence,
    test_chat_and_completions_equal_generate_alone,
    test_extra_body_options_seed_and_stop,
    test_streams_concatenate_to_the_full_text,
)

import stdec
from stdec.errors import StdecError
from stdec.serve import ServerConfig
from stdec.serve.replicas import APP_NAME, application, plan

serve = pytest.importorskip("ray.serve", reason="Ray Serve is the optional extra stdec[ray]")
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def testbed():
    return stdec.load("testbed", device="cpu")


@pytest.fixture(scope="module")
def deployment():
    """Two replicas on a local Ray with two CPUs (one torch thread each): (url, handle)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = ServerConfig(name="testbed", defaults=DEFAULTS, port=port, max_batch=4,
                              max_queue=32, max_body_bytes=8192, drain=1.0)
        share = plan(2, "cpu", ray.cluster_resources())
        assert (share.threads, share.actor_options()) == (1, {"num_cpus": 1.0})
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        handle = serve.run(application("testbed", {"device": "cpu"}, config, share),
                           name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}", handle
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def url(deployment):
    return deployment[0]


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def replica_pids(handle, timeout: float = 120.0) -> set[int]:
    """The replicas' processes, once both answer (Ray Serve routes each call to one)."""
    deadline, pids = time.monotonic() + timeout, set()
    while time.monotonic() < deadline:
        try:
            pids = {handle.pid.remote().result(timeout_s=10) for _ in range(8)}
        except Exception:  # a replica is restarting
            pids = set()
        if len(pids) == 2:
            return pids
        time.sleep(1)
    raise AssertionError(f"two replicas did not answer within {timeout} s (saw {pids})")


def test_plan_shares_gpus_or_threads():
    gpu = plan(2, None, {"CPU": 16, "GPU": 2})
    assert gpu.gpus and gpu.actor_options() == {"num_gpus": 1, "num_cpus": 1}
    cpu = plan(3, "cpu", {"CPU": 16, "GPU": 2})
    assert not cpu.gpus and cpu.threads == 5 and cpu.actor_options() == {"num_cpus": 5.0}
    assert plan(4, None, {"CPU": 2}).actor_options() == {"num_cpus": 0.5}
    with pytest.raises(StdecError, match="the Ray cluster has 1"):
        plan(2, "cuda", {"CPU": 8, "GPU": 1})
    with pytest.raises(StdecError, match="has none"):
        plan(2, "cuda", {"CPU": 8})


def test_health_and_models_on_every_replica(url):
    for _ in range(4):
        assert httpx.get(url + "/health").json()["max_batch"] == 4
    assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "testbed"
    r = httpx.get(url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["message"].startswith("no route /nope")


def test_a_killed_replica_fails_its_requests_the_others_finish_and_it_comes_back(deployment):
    url, handle = deployment
    # 192 steps without a cache take minutes on a busy 2-core machine: a 60 s client timeout
    # would fail the survivors too, so this client waits as long as the join below
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    victim = min(replica_pids(handle))
    slow = dict(policy="fixed", cache="none", steps=192, stop_at_eos=False)
    admitted, outcomes = threading.Semaphore(0), {}

    def ask(i: int):
        told = False  # `admitted` is released once a request
        try:
            if i % 3 == 2:  # one in three not streamed
                told = admitted.release() or True
                out = client.chat.completions.create(
                    model="testbed", max_tokens=192, extra_body=slow,
                    messages=[{"role": "user", "content": PROMPTS[i % 3]}])
                outcomes[i] = ("done", out.choices[0].finish_reason)
                return
            stream = client.chat.completions.create(
                model="testbed", max_tokens=192, stream=True, extra_body=slow,
                messages=[{"role": "user", "content": PROMPTS[i % 3]}])
            chunks = iter(stream)
            next(chunks)  # the role chunk: admitted into a slot
            told = admitted.release() or True
            finish = [c.choices[0].finish_reason for c in chunks if c.choices]
            outcomes[i] = ("done", finish[-1])
        except (openai.APIError, httpx.TransportError) as err:
            outcomes[i] = ("error", f"{type(err).__name__}: {err}")
        finally:
            if not told:
                admitted.release()

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    for _ in threads:  # every request sent, every stream admitted
        assert admitted.acquire(timeout=120)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 600
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a request hangs after the kill"
    kinds = [kind for kind, _ in outcomes.values()]
    assert len(outcomes) == 6 and "error" in kinds and "done" in kinds, outcomes
    assert all(what in ("stop", "length") for kind, what in outcomes.values() if kind == "done")
    # Ray Serve starts a new replica in the killed one's place
    pids = replica_pids(handle, timeout=180)
    assert victim not in pids
    out = client.completions.create(model="testbed", prompt=PROMPTS[0], max_tokens=16)
    assert out.choices[0].finish_reason in ("stop", "length")
