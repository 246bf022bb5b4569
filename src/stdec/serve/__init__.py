"""`stdec serve`: an OpenAI-compatible HTTP server over the continuous-batching engine.

As vLLM's entrypoints are split: app.py holds the routes (validate, schedule, stream),
serving.py the serving logic (a request's prompt, its DecodeConfig, its answer collected or
streamed), protocol.py the typed schemas and error JSON, runner.py the engine's thread,
config.py ServerConfig, metrics.py the Prometheus counters. Slots and scheduling belong to
the engine (stdec.decoding.engine).
"""

from dataclasses import replace

from stdec.serve.app import create_app
from stdec.serve.config import ServerConfig
from stdec.serve.runner import Runner

__all__ = ["Runner", "ServerConfig", "create_app", "serve", "uvicorn_server"]


def uvicorn_server(model, tokenizer, config: ServerConfig, *, host: str | None = None,
                   port: int | None = None, drain_s: float | None = None,
                   log_level: str = "warning"):
    """A uvicorn.Server for the app (tests and benchmarks run it on a thread). On shutdown
    it drains in-flight requests for `config.drain` seconds, then cancels them with an error.
    `host`, `port` and `drain_s`, when given, replace the config's (validated as it is)."""
    import asyncio
    import time

    import uvicorn

    given = {"host": host, "port": port, "drain": drain_s}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            # drain: no new requests, in-flight ones get config.drain seconds; then cancel the
            # rest with an error that their streams still carry, then close connections
            runner = app.state.runner
            runner.draining = True
            deadline = time.monotonic() + config.drain
            while runner.busy and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(runner.stop)
            await asyncio.sleep(0.2)
            await super().shutdown(sockets)

    app = create_app(model, tokenizer, config)
    return Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                                 timeout_graceful_shutdown=1.0, lifespan="on"))


def serve(model, tokenizer, config: ServerConfig, *, host: str | None = None,
          port: int | None = None, drain_s: float | None = None):
    """Serve until interrupted (Ctrl-C or SIGTERM drain, then cancel) on the config's host
    and port; `host`, `port` and `drain_s`, when given, replace the config's."""
    uvicorn_server(model, tokenizer, config, host=host, port=port, drain_s=drain_s,
                   log_level="info").run()
