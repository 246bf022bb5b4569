"""`stdec serve --replicas N`: N engine replicas behind one OpenAI endpoint, on Ray Serve.

Each replica is a Ray Serve replica running the single-process server's own FastAPI app
(app.create_app) as its ingress: it loads the model itself and drives its own engine thread,
so routes, streaming and errors are the same. Ray Serve's proxy owns the port and picks a
replica per request (its power-of-two-choices router, by queue length); a replica that dies
is restarted by Ray Serve. On GPUs each replica holds one; on CPUs the threads are shared
out. Ray is imported only for `--replicas` above 1 (this module imports it lazily).
"""

import os
import signal
import sys
import time
from dataclasses import dataclass

from stdec.errors import StdecError
from stdec.serve.config import ServerConfig

__all__ = ["APP_NAME", "Plan", "application", "plan", "serve_replicas"]

APP_NAME = "stdec"  # the Ray Serve application's name


@dataclass(frozen=True)
class Plan:
    """What each replica gets: one GPU, or its share of the CPU threads."""

    replicas: int
    gpus: bool  # one GPU a replica
    threads: int  # torch threads a replica, on CPUs
    cpus: float  # Ray's num_cpus a replica, on CPUs

    def actor_options(self) -> dict:
        if self.gpus:
            return {"num_gpus": 1, "num_cpus": 1}
        return {"num_cpus": self.cpus}

    def __str__(self) -> str:
        each = "1 GPU" if self.gpus else \
            f"{self.threads} torch thread{'s' if self.threads > 1 else ''}"
        return f"{self.replicas} replicas, {each} each"


def plan(replicas: int, device: str | None, resources: dict) -> Plan:
    """Share the cluster's resources (ray.cluster_resources()) among `replicas`: one GPU each
    unless `device` is cpu; else total CPUs // replicas threads each (at least 1)."""
    if not isinstance(replicas, int) or replicas < 1:
        raise StdecError(f"replicas must be a positive integer, got {replicas!r}.")
    gpus = resources.get("GPU", 0)
    if device != "cpu" and gpus >= 1:
        if gpus < replicas:
            raise StdecError(f"--replicas {replicas} asks one GPU each, and the Ray cluster "
                             f"has {gpus:g}; start fewer replicas or join more machines.")
        return Plan(replicas, True, 1, 1)
    if device is not None and device.startswith("cuda"):
        raise StdecError(f"--device {device} asks for GPUs, and the Ray cluster has none; "
                         "pass --device cpu or join a machine with GPUs.")
    total = int(resources.get("CPU", os.cpu_count() or 1))
    threads = max(1, total // replicas)
    # fewer CPUs than replicas: fractional shares, so that every replica is still placed
    cpus = float(threads) if total >= replicas else total / replicas
    return Plan(replicas, False, threads, cpus)


def application(model: str, load_options: dict, config: ServerConfig, replicas: Plan):
    """The Ray Serve application: `replicas.replicas` copies of the server's app, each
    loading `model` with `load_options` (stdec.api.load's keywords) when it starts."""
    from ray import serve

    threads, gpus = replicas.threads, replicas.gpus

    def build():  # runs in each replica, at its start
        import torch

        from stdec.api import load
        from stdec.serve.app import create_app

        if not gpus:
            torch.set_num_threads(threads)
        loaded, tokenizer = load(model, **load_options)
        return create_app(loaded, tokenizer, config)

    class Replica:
        def pid(self) -> int:
            """This replica's process (for operators and fault tests)."""
            return os.getpid()

        def check_health(self):
            """Ray Serve's health probe: a replica whose engine thread is gone is restarted."""
            runner = self.app.state.runner
            if not runner.thread.is_alive():
                raise RuntimeError("the engine thread has stopped")

    deployment = serve.deployment(serve.ingress(build)(Replica), name="Replica")
    return deployment.options(
        num_replicas=replicas.replicas, ray_actor_options=replicas.actor_options(),
        # the engine answers 429 itself: let every slot and queue place reach it, plus one
        max_ongoing_requests=config.max_batch + config.max_queue + 1,
        graceful_shutdown_timeout_s=config.drain, health_check_period_s=5,
    ).bind()


def serve_replicas(model: str, load_options: dict, config: ServerConfig, replicas: int,
                   device: str | None = None):
    """Run `replicas` replicas on the Ray cluster that RAY_ADDRESS (or a local `ray start`)
    names, else on a new local one, until interrupted; the proxy listens on the config's
    host and port."""
    import ray
    from ray import serve

    ray.init(logging_level="WARNING", log_to_driver=False)
    share = plan(replicas, device, ray.cluster_resources())
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(application(model, load_options, config, share), name=APP_NAME,
              route_prefix="/")
    print(f"serving {config.name!r} on http://{config.host}:{config.port}/v1 ({share}, "
          f"{config.max_batch} slots each)", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM drains as Ctrl-C does
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:  # Ray Serve lets each replica's requests run for config.drain s, then stops it
        serve.delete(APP_NAME)  # this application only: a shared cluster keeps the rest
