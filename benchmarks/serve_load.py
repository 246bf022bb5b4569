"""Load on `stdec serve`: N concurrent clients x M requests each over loopback, for several
--max-batch values, beside the same requests through a static-batch loop.

Bounded (a fixed set of requests; every call has a timeout) and it stops by itself. For each
max-batch it starts `stdec serve` in a subprocess on a free loopback port, sends the
requests with the real openai client (streamed, so time to first token is seen), checks
every answer against stdec.generate of that prompt alone, and prints throughput (generated
tokens/s), p50/p95 latency and p50/p95 time to first streamed token. The static-batch loop
decodes the same requests in arrival order, `max_batch` at a time, each batch starting when
the previous one has finished (the engine with no admission mid-batch; at batch 1 that is
stdec.generate of each request alone, the reference). /metrics (read with prometheus-client's
parser) must count every request in its latency histogram. Then clients that hang up
mid-stream: /metrics must show 0 active slots afterwards; and a 20 MB prompt, refused (413)
while /health is asked again and again: how long the refusal and the slowest /health took.

    python benchmarks/serve_load.py                       # testbed: 16 clients x 4 requests
    python benchmarks/serve_load.py --clients 4 --per-client 2 --batches 1,4
    python benchmarks/serve_load.py --replicas 1,2 --batches 4   # on Ray Serve (stdec[ray])

With --replicas R > 1 the server is `stdec serve --replicas R` (a local Ray cluster of the
machine's CPUs, each replica taking its share of the threads, or one GPU each); the
hang-up test then runs on R = 1 only, since /metrics answers for one replica.
"""

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import torch
from prometheus_client.parser import text_string_to_metric_families

from stdec.api import encode, end_token_ids, generate, load, model_defaults
from stdec.decoding.config import DecodeConfig
from stdec.decoding.defaults import effective
from stdec.decoding.engine import Engine
from stdec.tasks import get_task
from stdec.tasks.base import format_prompt

TASKS = {"gsm": 96, "code": 96, "lists": 64}  # the testbed's standard gen_length per task
SETTINGS = [  # mixed rules and caches; fixed commits 2 tokens a step
    {"policy": "stdec", "cache": "dual"},
    {"policy": "threshold", "cache": "prefix"},
    {"policy": "fixed", "cache": "none", "k": 2},
    {"policy": "stdec", "cache": "none"},
    {"policy": "factor", "cache": "dual"},
    {"policy": "localleap", "cache": "prefix"},
]
BLOCK = 32


def requests(n: int) -> list[tuple[str, int, dict]]:
    """(prompt, max_tokens, decoding options): gsm, code and lists test prompts in turn."""
    problems = {name: get_task(name).problems("test") for name in TASKS}
    out = []
    for i in range(n):
        name = list(TASKS)[i % len(TASKS)]
        setting = dict(SETTINGS[i % len(SETTINGS)])
        if "k" in setting:
            setting["steps"] = TASKS[name] // setting.pop("k")
        out.append((format_prompt(problems[name][i // len(TASKS)]), TASKS[name], setting))
    return out


CHECKPOINT: dict = {}  # the testbed's decoding defaults, which the server starts from


def config(max_tokens: int, options: dict) -> DecodeConfig:
    """What the server decodes a request with: its options over the checkpoint's defaults."""
    return effective(CHECKPOINT, {"gen_length": max_tokens, "block_length": BLOCK, **options})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(max_batch: int, threads: int,
                 replicas: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stdec", "serve", "--port", str(port), "--max-batch",
         str(max_batch), "--max-queue", "1024", "--gen-length", "64", "--block-length",
         str(BLOCK), "--drain", "2", "--replicas", str(replicas)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # replicas: Ray starts, then each replica loads
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not come up within 300 s")


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) of process `root` and all its descendants so far, from
    /proc: a server with replicas runs in Ray's worker processes under it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            parents[int(entry)] = (int(fields[1]), ticks)
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _) in parents.items() if ppid in tree} - tree
        tree, grew = tree | more, bool(more)
    return sum(parents[pid][1] for pid in tree if pid in parents) / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def ask(client: openai.OpenAI, prompt: str, max_tokens: int, options: dict, t0: float) -> dict:
    """One streamed chat request: text, tokens, latency and time to first content."""
    start, first, pieces, tokens = time.perf_counter(), None, [], 0
    stream = client.chat.completions.create(
        model="testbed", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True}, extra_body=options)
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                first = first or time.perf_counter()
                pieces.append(choice.delta.content)
    end = time.perf_counter()
    return {"text": "".join(pieces), "tokens": tokens, "latency": end - start,
            "ttft": (first or end) - start, "end": end - t0}


def run_server(url: str, work: list, clients: int) -> tuple[list[dict], float]:
    """`clients` threads, each sending its share of `work` one after the other."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
    shares = [work[i::clients] for i in range(clients)]
    results: list = [None] * len(work)
    t0 = time.perf_counter()

    def worker(c: int):
        for j, (prompt, max_tokens, options) in enumerate(shares[c]):
            results[c + j * clients] = ask(client, prompt, max_tokens, options, t0)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return results, time.perf_counter() - t0


def run_static(model, tokenizer, work: list, max_batch: int) -> tuple[list[dict], float]:
    """The same requests, max_batch at a time, each batch after the previous one."""
    eos = end_token_ids(tokenizer)
    ids = encode(tokenizer, [p for p, _, _ in work], chat=True)
    results = []
    t0 = time.perf_counter()
    for i in range(0, len(work), max_batch):
        engine = Engine(model, max_batch=max_batch, eos_ids=eos)
        jobs = [engine.submit(ids[j], config(m, o))
                for j, (_, m, o) in enumerate(work[i : i + max_batch], start=i)]
        engine.run()
        end = time.perf_counter() - t0
        results += [{"tokens": j.stats.gen_tokens, "latency": end, "ttft": end, "end": end,
                     "text": tokenizer.decode(j.ids[: j.stats.gen_tokens],
                                              skip_special_tokens=True)} for j in jobs]
    return results, time.perf_counter() - t0


def summary(label: str, results: list[dict], wall: float, streamed: bool = True) -> str:
    tokens = sum(r["tokens"] for r in results)
    lat = sorted(r["latency"] for r in results)
    ttft = sorted(r["ttft"] for r in results)

    def q(xs, f):
        return xs[min(len(xs) - 1, int(f * len(xs)))]

    ttft_text = f"{q(ttft, .5):6.2f} {q(ttft, .95):6.2f}" if streamed else f"{'-':>6} {'-':>6}"
    return (f"{label:<22} {tokens / wall:9.1f} {q(lat, .5):7.2f} {q(lat, .95):7.2f} "
            f"{ttft_text} {wall:7.1f}")


def metrics(url: str) -> dict[str, float]:
    """/metrics through prometheus-client's parser: {name or name{outcome}: value}."""
    out = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            key = s.name + (f"{{{s.labels['outcome']}}}" if "outcome" in s.labels else "")
            if "le" not in s.labels:
                out[key] = s.value
    return out


def big_prompt_test(url: str, megabytes: int) -> str:
    """A prompt of `megabytes` MB, refused (413) while /health is asked in a loop."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "testbed", "prompt": "hello " * (megabytes * 2**20 // 6)})
    body, result = body.encode(), {}

    def send():
        start = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        result["status"] = conn.getresponse().status
        result["seconds"] = time.perf_counter() - start

    sender = threading.Thread(target=send)
    probe, waits = http.client.HTTPConnection(host, int(port), timeout=60), []
    sender.start()
    while sender.is_alive():
        start = time.perf_counter()
        probe.request("GET", "/health")
        probe.getresponse().read()
        waits.append(time.perf_counter() - start)
    sender.join()
    waits.sort()
    return (f"a {megabytes} MB prompt: {result['status']} in {result['seconds']:.3f} s; "
            f"/health meanwhile: {len(waits)} answers, median {waits[len(waits) // 2] * 1e3:.1f}"
            f" ms, slowest {waits[-1] * 1e3:.1f} ms")


def drop_test(url: str, work: list, drops: int) -> str:
    """`drops` clients hang up after their first streamed token while others finish."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
    long = {"policy": "fixed", "cache": "none", "stop_at_eos": False}

    def hang_up(prompt):
        stream = client.chat.completions.create(
            model="testbed", messages=[{"role": "user", "content": prompt}], max_tokens=96,
            stream=True, extra_body=long)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        stream.close()

    with ThreadPoolExecutor(drops + 4) as pool:
        hung = [pool.submit(hang_up, work[i][0]) for i in range(drops)]
        kept = [pool.submit(ask, client, *work[i], time.perf_counter()) for i in range(4)]
        for f in hung:
            f.result()
        completed = sum(bool(f.result()["tokens"] >= 0) for f in kept)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = metrics(url)
        if m["stdec_active_slots"] == 0:
            break
        time.sleep(0.2)
    return (f"{drops} clients hung up mid-stream: active slots after drain "
            f"{m['stdec_active_slots']:.0f}, cancelled {m['stdec_requests_total{cancelled}']:.0f}"
            f", other requests completed {completed}/4")


def serve_once(model, tokenizer, work: list, alone: list, rows: dict, args, b: int,
               replicas: int, with_static: bool, drops: int, big_prompt_mb: int):
    """The requests through `stdec serve --max-batch b --replicas replicas`, then (with_static,
    b > 1) the static-batch loop at b, then (drops) the hang-up test and (big_prompt_mb) a
    prompt refused while /health is timed."""
    proc, url = start_server(b, args.threads, replicas)
    label = f"serve --max-batch {b}" + (f" x{replicas}" if replicas > 1 else "")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        for _ in range(2 * replicas):  # warm-up, discarded (each replica, likely)
            ask(client, *work[0], time.perf_counter())
        cpu = cpu_seconds(proc.pid)
        results, wall = run_server(url, work, args.clients)
        cpu = cpu_seconds(proc.pid) - cpu
        same = sum(r["text"] == a for r, a in zip(results, alone, strict=True))
        tokens = sum(r["tokens"] for r in results)
        rows[b if replicas == 1 else (replicas, b)] = tokens / wall
        # tokens per CPU-second: on a machine shared with other jobs, more processes take
        # more of its time; this says whether the replicas also do more with it
        counted = ""
        if replicas == 1:  # /metrics is one replica's
            n = metrics(url)["stdec_e2e_request_latency_seconds_count"] - 2  # the warm-up
            counted = f"; /metrics latency histogram counts {n:.0f}/{len(work)}"
        print(summary(label, results, wall) + f"   {same}/{len(work)} == generate alone; "
              f"{cpu:.1f} CPU s, {tokens / cpu:.1f} tokens/CPU s{counted}", flush=True)
        if with_static and b > 1:
            static, swall = run_static(model, tokenizer, work, b)
            same = sum(r["text"] == a for r, a in zip(static, alone, strict=True))
            rows[("static", b)] = sum(r["tokens"] for r in static) / swall
            print(summary(f"static batch {b}", static, swall, streamed=False) +
                  f"   {same}/{len(work)} == generate alone", flush=True)
        if drops:
            print(drop_test(url, work, drops), flush=True)
        if big_prompt_mb:
            print(big_prompt_test(url, big_prompt_mb), flush=True)
    finally:
        stop_server(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--batches", default="1,4,16", help="max-batch values, comma-separated")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch threads of the server and of the static loop")
    ap.add_argument("--replicas", default="1",
                    help="engine replicas of the server (Ray Serve when > 1), comma-separated")
    ap.add_argument("--drops", type=int, default=10)
    ap.add_argument("--big-prompt-mb", type=int, default=20,
                    help="size of the prompt sent to be refused (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    replicas = [int(r) for r in args.replicas.split(",")]
    work = requests(args.clients * args.per_client)
    model, tokenizer = load("testbed", device="cpu")
    CHECKPOINT.update(model_defaults(model))
    print(f"# {len(work)} requests ({', '.join(TASKS)} prompts; {len(SETTINGS)} rule/cache "
          f"settings) from {args.clients} clients; testbed on {platform.processor() or 'cpu'}, "
          f"{args.threads} threads, torch {torch.__version__}, python "
          f"{platform.python_version()}")
    print(f"{'':<22} {'tok/s':>9} {'p50 s':>7} {'p95 s':>7} {'ttft50':>6} {'ttft95':>6} "
          f"{'wall s':>7}")
    # the reference, and the static loop at batch 1: each request alone, stdec.generate
    generate(model, tokenizer, *work[0][:1], config(*work[0][1:]), chat=True)  # warm-up
    alone, t0 = [], time.perf_counter()
    for p, m, o in work:
        out = generate(model, tokenizer, p, config(m, o), chat=True)
        end = time.perf_counter() - t0
        alone.append({"text": out.texts[0], "tokens": out.stats[0].gen_tokens,
                      "latency": end, "ttft": end, "end": end})
    rows = {("static", 1): sum(r["tokens"] for r in alone) / (time.perf_counter() - t0)}
    print(summary("generate alone (1)", alone, time.perf_counter() - t0, streamed=False),
          flush=True)
    alone = [r["text"] for r in alone]
    for r in replicas:
        for b in batches:
            last = r == 1 and b == max(batches)
            serve_once(model, tokenizer, work, alone, rows, args, b, r,
                       with_static=r == replicas[0], drops=args.drops if last else 0,
                       big_prompt_mb=args.big_prompt_mb if last else 0)
    if 1 in rows and len(batches) > 1 and ("static", max(batches)) in rows:
        top = max(batches)
        print(f"throughput: max-batch {top} / max-batch 1 = {rows[top] / rows[1]:.2f}x; "
              f"/ static batch {top} = {rows[top] / rows[('static', top)]:.2f}x")
    for r in replicas[1:]:
        for b in batches:
            if b in rows and (r, b) in rows:
                print(f"throughput: max-batch {b}, {r} replicas / 1 = "
                      f"{rows[(r, b)] / rows[b]:.2f}x")


if __name__ == "__main__":
    threading.current_thread().name = "serve_load"
    main()
