"""The FastAPI app: routes that validate, schedule and stream, and nothing else.

The engine (stdec.decoding.engine) owns slots and scheduling; runner.py owns the engine's
thread, serving.py what happens to a request between its body and its answer, protocol.py
the schemas. Every error leaves as OpenAI's error JSON with one sentence.
"""

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from stdec.api import end_token_ids
from stdec.decoding.engine import Engine
from stdec.serve import protocol as p
from stdec.serve.config import ServerConfig
from stdec.serve.metrics import Metrics
from stdec.serve.runner import Runner
from stdec.serve.serving import Generation, Serving

__all__ = ["create_app"]


def create_app(model, tokenizer, config: ServerConfig) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = Engine(model, max_batch=config.max_batch,
                        max_length=model.config.max_sequence_length,
                        eos_ids=end_token_ids(tokenizer))
        app.state.runner = runner = Runner(engine)
        app.state.serving = Serving(model, tokenizer, config, runner, metrics)
        runner.start()
        yield
        runner.stop()  # whatever did not drain in uvicorn's graceful period ends with SHUTDOWN

    app = FastAPI(title="stdec", lifespan=lifespan)

    @app.exception_handler(p.ApiError)
    async def api_error(request: Request, err: p.ApiError):
        if err.status in (400, 404, 413, 429):
            metrics.count("rejected" if err.status == 429 else "invalid")
        return JSONResponse(p.error_body(err.message, err.kind, err.param), err.status,
                            headers=err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = {404: f"no route {request.url.path}; see /v1/models, /v1/completions, "
                        "/v1/chat/completions, /health, /metrics.",
                   405: f"{request.method} is not allowed on {request.url.path}."}
        return JSONResponse(p.error_body(message.get(err.status_code, str(err.detail))),
                            err.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        return JSONResponse(p.error_body(f"internal error: {type(err).__name__}: {err}",
                                         "server_error"), 500)

    @app.get("/health")
    async def health(request: Request):
        runner: Runner = request.app.state.runner
        return p.Health(active_slots=runner.engine.active, queued=runner.queued,
                        max_batch=config.max_batch).model_dump()

    @app.get("/v1/models")
    async def models():
        return p.ModelList(data=[p.ModelCard(id=config.name)]).model_dump()

    @app.get("/metrics")
    async def prometheus(request: Request):
        runner: Runner = request.app.state.runner
        text = metrics.render(queued=runner.queued, active=runner.engine.active,
                              max_batch=config.max_batch)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await decode(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await decode(request, chat=True)

    async def decode(request: Request, chat: bool):
        """Parse, check the model name, build the prompt, schedule; then stream or collect."""
        serving: Serving = request.app.state.serving
        kind = p.ChatRequest if chat else p.CompletionRequest
        body = p.parse(await request.body(), kind, config.max_body_bytes)
        serving.check_model(body)
        ids, images = (serving.chat_prompt if chat else serving.completion_prompt)(body)
        return await answer(request, serving.schedule(body, ids, images, chat=chat))

    async def answer(request: Request, gen: Generation):
        serving: Serving = request.app.state.serving
        if gen.stream:
            return StreamingResponse(serving.stream(gen), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await serving.collect(gen, request.is_disconnected)

    return app
