"""`stdec serve`: an OpenAI-compatible HTTP server over the continuous-batching engine.

protocol.py holds the schemas and error JSON, app.py the routes, the engine's thread and
streaming, metrics.py the Prometheus counters. Slots and scheduling belong to the engine
(stdec.decoding.engine); this package only validates, schedules and streams.
"""

from stdec.serve.app import Runner, ServerConfig, create_app

__all__ = ["Runner", "ServerConfig", "create_app", "serve", "uvicorn_server"]


def uvicorn_server(model, tokenizer, config: ServerConfig, *, host: str = "127.0.0.1",
                   port: int = 8000, drain_s: float = 30.0, log_level: str = "warning"):
    """A uvicorn.Server for the app (tests and benchmarks run it on a thread). On shutdown
    it drains in-flight requests for `drain_s` seconds, then cancels them with an error."""
    import asyncio
    import time

    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            # drain: no new requests, in-flight ones get drain_s seconds; then cancel the
            # rest with an error that their streams still carry, then close connections
            runner = app.state.runner
            runner.draining = True
            deadline = time.monotonic() + drain_s
            while runner.busy and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(runner.stop)
            await asyncio.sleep(0.2)
            await super().shutdown(sockets)

    app = create_app(model, tokenizer, config)
    return Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                 timeout_graceful_shutdown=1.0, lifespan="on"))


def serve(model, tokenizer, config: ServerConfig, *, host: str = "127.0.0.1",
          port: int = 8000, drain_s: float = 30.0):
    """Serve until interrupted (Ctrl-C or SIGTERM drain, then cancel)."""
    uvicorn_server(model, tokenizer, config, host=host, port=port, drain_s=drain_s,
                   log_level="info").run()
