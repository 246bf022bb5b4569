"""The FastAPI app: routes that validate, schedule and stream, and nothing else.

The engine (stdec.decoding.engine) owns slots and scheduling; runner.py owns the engine's
thread, serving.py what happens to a request between its body and its answer, protocol.py
the schemas, access.py the request id, the API key and the access log. Every error leaves as
OpenAI's error JSON with one sentence.
"""

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from stdec.api import encode, end_token_ids
from stdec.decoding.engine import Engine
from stdec.models.images import sees_images
from stdec.serve import protocol as p
from stdec.serve.access import Access
from stdec.serve.config import ServerConfig
from stdec.serve.metrics import CONTENT_TYPE, Metrics
from stdec.serve.runner import Runner
from stdec.serve.serving import Generation, Serving, with_max_tokens

__all__ = ["create_app"]

ROUTES = "/v1/models, /v1/completions, /v1/chat/completions, /health, /ready, /metrics"


def create_app(model, tokenizer, config: ServerConfig) -> FastAPI:
    """The app over a loaded model; its engine's thread starts (and warms up) with the app's
    lifespan. A --max-prompt-tokens the model cannot take is refused here."""
    metrics = Metrics(config.max_batch)
    engine = Engine(model, max_batch=config.max_batch,
                    max_length=model.config.max_sequence_length,
                    eos_ids=end_token_ids(tokenizer))
    runner = Runner(engine, on_step=metrics.step)
    serving = Serving(model, tokenizer, config, runner, metrics)
    metrics.watch(lambda: engine.active, lambda: runner.queued)
    # the warm-up: the server's default decode of a short prompt, one position long
    images = [[]] if sees_images(model) else None
    warm_up = (encode(tokenizer, ["Hello"], chat=False, images=images)[0],
               with_max_tokens({}, config.defaults, 1))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start(warm_up)
        yield
        runner.stop()  # whatever did not drain in uvicorn's graceful period ends with SHUTDOWN

    app = FastAPI(title="stdec", lifespan=lifespan)
    app.state.runner, app.state.serving = runner, serving
    app.add_middleware(Access, api_key=config.api_key, metrics=metrics)

    @app.exception_handler(p.ApiError)
    async def api_error(request: Request, err: p.ApiError):
        if err.status in (400, 404, 413):
            metrics.count("invalid")
        return JSONResponse(p.error_body(err.message, err.kind, err.param), err.status,
                            headers=err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = {404: f"no route {request.url.path}; see {ROUTES}.",
                   405: f"{request.method} is not allowed on {request.url.path}."}
        return JSONResponse(p.error_body(message.get(err.status_code, str(err.detail))),
                            err.status_code)

    @app.get("/health")
    async def health():
        """Alive: answers while the server runs, whatever it is doing."""
        return p.Health(active_slots=engine.active, queued=runner.queued,
                        max_batch=config.max_batch).model_dump()

    @app.get("/ready")
    async def ready():
        """Ready for requests: warmed up and not shutting down; 503 otherwise."""
        if runner.draining:
            raise p.ApiError(503, "the server is shutting down.", "server_error")
        if runner.warm_up_error is not None:
            raise p.ApiError(503, f"the warm-up decode failed ({runner.warm_up_error}).",
                             "server_error")
        if not runner.ready.is_set():
            raise p.ApiError(503, "the model is warming up; retry in a second.",
                             "server_error", headers={"Retry-After": "1"})
        return {"status": "ready"}

    @app.get("/v1/models")
    async def models():
        return p.ModelList(data=[p.ModelCard(id=config.name)]).model_dump()

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await decode(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await decode(request, chat=True)

    async def decode(request: Request, chat: bool):
        """Read the body; prepare it on a worker thread (parse, prompt, images, options,
        limits); admit it here, on the event loop; then stream or collect."""
        t0 = time.perf_counter()
        raw = await read_body(request, config.max_body_bytes)
        prepared = await run_in_threadpool(serving.prepare, raw, chat)
        gen = serving.schedule(prepared, chat=chat, t0=t0, state=request.state)
        return await answer(request, gen)

    async def answer(request: Request, gen: Generation):
        if gen.stream:
            return Stream(serving.stream(gen), on_close=lambda: serving.close(gen),
                          media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await serving.collect(gen, request.receive)

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 past `limit` bytes (read to its end, but not kept)."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
    except ClientDisconnect:
        raise p.ApiError(499, "the client hung up while sending its request.") from None
    if size > limit:
        raise p.ApiError(413, f"the request body has {size} bytes; the limit is {limit}.")
    return b"".join(chunks)


class Stream(StreamingResponse):
    """A streamed answer that calls `on_close` when it ends, however it ends (a client that
    hangs up before the first chunk included)."""

    def __init__(self, content, *, on_close, **kw):
        super().__init__(content, **kw)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
