"""`stdec serve`: an OpenAI-compatible HTTP server over the continuous-batching engine.

As vLLM's entrypoints are split: app.py holds the routes (validate, schedule, stream),
serving.py the serving logic (a request's prompt, its DecodeConfig, its answer collected or
streamed), protocol.py the typed schemas and error JSON, access.py the request id, the API
key and the access log, runner.py the engine's thread, config.py ServerConfig, metrics.py
the Prometheus metrics. Slots and scheduling belong to the engine (stdec.decoding.engine).
"""

import errno
import gc
import socket
from dataclasses import replace

from stdec.errors import StdecError
from stdec.serve.app import create_app
from stdec.serve.config import ServerConfig
from stdec.serve.runner import Runner

__all__ = ["Runner", "ServerConfig", "bind", "create_app", "serve", "uvicorn_server"]


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, for the server to listen on; or one sentence saying why
    not (the CLI binds before it loads a model, so a port in use costs no load)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError, OverflowError):
        raise StdecError(f"host {host!r} is not an address to listen on; pass --host "
                         "127.0.0.1 (this machine) or 0.0.0.0 (every interface).") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        why = {errno.EADDRINUSE: f"port {port} on {host} is in use; stop what listens there or "
                                 "pass another --port.",
               errno.EACCES: f"port {port} needs privileges this user lacks (ports below 1024 "
                             "usually do); pass --port 8000 or another above 1023.",
               errno.EADDRNOTAVAIL: f"host {host!r} is not an address of this machine; pass "
                                    "--host 127.0.0.1 or 0.0.0.0."}
        raise StdecError(why.get(err.errno, f"cannot listen on {host} port {port} "
                                            f"({err.strerror}).")) from None
    return sock


def uvicorn_server(model, tokenizer, config: ServerConfig, *, host: str | None = None,
                   port: int | None = None, drain_s: float | None = None,
                   log_level: str = "warning"):
    """A uvicorn.Server for the app (tests and benchmarks run it on a thread). On shutdown
    it drains in-flight requests for `config.drain` seconds, then cancels them with an error.
    `host`, `port` and `drain_s`, when given, replace the config's (validated as it is).
    The access log (logger stdec.serve.access) writes at `log_level` info or lower."""
    import asyncio
    import copy
    import time

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

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
    logging = copy.deepcopy(LOGGING_CONFIG)  # uvicorn's, with stdec's access log in place
    logging["loggers"]["stdec.serve.access"] = {"handlers": ["default"], "propagate": False,
                                                "level": log_level.upper()}
    return Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                                 log_config=logging, access_log=False,
                                 timeout_graceful_shutdown=1.0, lifespan="on"))


def serve(model, tokenizer, config: ServerConfig, *, host: str | None = None,
          port: int | None = None, drain_s: float | None = None,
          sock: socket.socket | None = None):
    """Serve until interrupted (Ctrl-C or SIGTERM drain, then cancel) on the config's host
    and port, or on `sock` (from `bind`); `host`, `port` and `drain_s`, when given, replace
    the config's."""
    server = uvicorn_server(model, tokenizer, config, host=host, port=port, drain_s=drain_s,
                            log_level="info")
    # the startup heap (torch, transformers, the model) lives as long as the process: keep it
    # out of the collector's full passes, each of which would stall every request (and
    # /health) for about half a second on a testbed server
    gc.collect()
    gc.freeze()
    server.run(sockets=None if sock is None else [sock])
