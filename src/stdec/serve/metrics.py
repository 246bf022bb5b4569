"""The server's Prometheus metrics (prometheus-client), every name prefixed stdec_.

Each server has a registry of its own, not the process-wide one, so that several servers in
one process (tests, benchmarks) keep their counts apart.
"""

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "OUTCOMES", "Metrics"]

# completed, failed (an error or a timeout), cancelled (the client hung up), rejected (429, or
# 503 while shutting down), invalid (400, 404, 413), unauthorized (401)
OUTCOMES = ("completed", "failed", "cancelled", "rejected", "invalid", "unauthorized")
SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
STEP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self, max_batch: int):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("stdec_requests", "Requests by outcome.", ["outcome"],
                                registry=r)
        for outcome in OUTCOMES:  # every outcome present from the start, at 0
            self.requests.labels(outcome)
        self.tokens = Counter("stdec_generated_tokens", "Tokens generated for completed "
                              "requests (up to the first EOS or stop string).", registry=r)
        self.forwards = Counter("stdec_forwards", "Model forward passes (a batched forward "
                                "counts once).", registry=r)
        self.rerun = Counter("stdec_rows_rerun_alone", "Rows run again one by one after "
                             "their batched forward failed.", registry=r)
        self.latency = Histogram("stdec_e2e_request_latency_seconds", "Seconds from a "
                                 "request's arrival to its end (completed, failed or "
                                 "cancelled).", buckets=SECONDS, registry=r)
        self.ttft = Histogram("stdec_time_to_first_token_seconds", "Seconds from a request's "
                              "arrival to its first committed token.", buckets=SECONDS,
                              registry=r)
        self.queue_time = Histogram("stdec_request_queue_time_seconds", "Seconds from a "
                                    "request's arrival to its admission into a slot.",
                                    buckets=SECONDS, registry=r)
        self.step_time = Histogram("stdec_step_duration_seconds", "Seconds of one engine "
                                   "step (every active row's forward and commit).",
                                   buckets=STEP_SECONDS, registry=r)
        rows = [2 ** i for i in range(max_batch.bit_length()) if 2 ** i < max_batch]
        self.rows = Histogram("stdec_rows_per_step", "Rows (requests) one engine step "
                              "advanced.", buckets=[*rows, max_batch], registry=r)
        self.active = Gauge("stdec_active_slots", "Slots holding a request.", registry=r)
        self.waiting = Gauge("stdec_waiting_requests", "Requests waiting for a slot.",
                             registry=r)
        Gauge("stdec_max_slots", "Slots of the engine (--max-batch).",
              registry=r).set(max_batch)

    def watch(self, active, waiting):
        """Read the two gauges from these callables whenever /metrics is scraped."""
        self.active.set_function(active)
        self.waiting.set_function(waiting)

    def count(self, outcome: str):
        self.requests.labels(outcome).inc()

    def ended(self, outcome: str, *, seconds: float, queue_s: float | None,
              ttft_s: float | None, tokens: int):
        """A request the engine took ended (completed, failed or cancelled)."""
        self.count(outcome)
        self.latency.observe(seconds)
        if queue_s is not None:
            self.queue_time.observe(queue_s)
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if outcome == "completed":
            self.tokens.inc(tokens)

    def step(self, seconds: float, before: dict[str, int], after: dict[str, int]):
        """One engine step: its duration, and the engine's counters before and after it."""
        self.step_time.observe(seconds)
        self.rows.observe(after["nfe"] - before["nfe"])
        self.forwards.inc(after["forwards"] - before["forwards"])
        self.rerun.inc(after["rerun_alone"] - before["rerun_alone"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
