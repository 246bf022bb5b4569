"""Server counters in Prometheus' text format, every name prefixed stdec_."""

import threading

__all__ = ["Metrics"]

OUTCOMES = ("completed", "failed", "cancelled", "rejected", "invalid")


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = dict.fromkeys(OUTCOMES, 0)
        self.gen_tokens = self.nfe = 0

    def count(self, outcome: str):
        with self.lock:
            self.requests[outcome] += 1

    def finish(self, job, answer):
        """A request answered: its tokens and forwards join the totals."""
        with self.lock:
            self.requests["completed"] += 1
            self.gen_tokens += answer.completion_tokens
            self.nfe += job.nfe

    def render(self, *, queued: int, active: int, max_batch: int) -> str:
        with self.lock:
            lines = ["# HELP stdec_requests_total Requests by outcome.",
                     "# TYPE stdec_requests_total counter"]
            lines += [f'stdec_requests_total{{outcome="{k}"}} {v}'
                      for k, v in self.requests.items()]
            tpf = self.gen_tokens / self.nfe if self.nfe else 0.0
            rows = [
                ("queue_depth", "gauge", "Requests waiting for a slot.", queued),
                ("active_slots", "gauge", "Slots holding a request.", active),
                ("max_slots", "gauge", "Slots of the engine (--max-batch).", max_batch),
                ("generated_tokens_total", "counter", "Tokens generated for completed requests.",
                 self.gen_tokens),
                ("nfe_total", "counter", "Forward passes taken by completed requests.",
                 self.nfe),
                ("tokens_per_forward", "gauge", "Generated tokens per forward (TPF) so far.",
                 round(tpf, 4)),
            ]
        for name, kind, help_text, value in rows:
            lines += [f"# HELP stdec_{name} {help_text}", f"# TYPE stdec_{name} {kind}",
                      f"stdec_{name} {value}"]
        return "\n".join(lines) + "\n"
