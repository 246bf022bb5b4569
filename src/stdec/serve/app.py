"""The HTTP layer: validate, schedule onto the engine's thread, stream the committed prefix.

The engine (stdec.decoding.engine) owns slots and scheduling; this module owns the
engine's thread (Runner), the routes and the streaming. Every error leaves as OpenAI's
error JSON with one sentence.
"""

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from stdec.api import encode, encode_chat, end_token_ids
from stdec.decoding.engine import Engine
from stdec.decoding.engine import Request as Job
from stdec.errors import StdecError
from stdec.models.images import require_vision, sees_images
from stdec.serve import protocol as p
from stdec.serve.config import ServerConfig
from stdec.serve.metrics import Metrics
from stdec.serve.runner import SHUTDOWN, Bridge, Runner

__all__ = ["Runner", "ServerConfig", "create_app"]


def read_images(urls: list[str], image_dir: Path | None) -> list:
    """The images of a request, from data URLs or, inside `image_dir`, local paths (a
    file:// URL or a plain path); a network URL is refused, never fetched."""
    from stdec.models.images import load_image

    images = []
    for url in urls:
        local = not url.startswith("data:") and not re.match(r"[a-zA-Z][\w+.-]*://", url)
        if url.startswith("file://"):
            url, local = url.removeprefix("file://"), True
        if local:
            shown = url if len(url) <= 60 else url[:57] + "..."
            if image_dir is None:
                raise StdecError(f"image {shown!r} is a local path, and this server reads none "
                                 "(start it with --image-dir DIR to allow a folder); send a "
                                 "data:image/...;base64 URL.")
            if not Path(url).resolve().is_relative_to(image_dir):
                raise StdecError(f"image {shown!r} is outside the server's --image-dir "
                                 f"{str(image_dir)!r}; send a data URL or a path inside it.")
        images.append(load_image(url))
    return images


def create_app(model, tokenizer, config: ServerConfig) -> FastAPI:
    max_length = model.config.max_sequence_length
    eos = set(end_token_ids(tokenizer))
    metrics = Metrics()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = Engine(model, max_batch=config.max_batch, max_length=max_length,
                        eos_ids=sorted(eos))
        state["runner"] = app.state.runner = runner = Runner(engine)
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
    async def health():
        runner: Runner = state["runner"]
        return {"status": "ok", "active_slots": runner.engine.active, "queued": runner.queued,
                "max_batch": config.max_batch}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.name, "object": "model",
                                            "created": 0, "owned_by": "stdec"}]}

    @app.get("/metrics")
    async def prometheus():
        runner: Runner = state["runner"]
        text = metrics.render(queued=runner.queued, active=runner.engine.active,
                              max_batch=config.max_batch)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = p.parse(await request.body(), p.CompletionRequest, config.max_body_bytes)
        check_model(body)
        try:
            ids = encode(tokenizer, [body.text()], chat=False,
                         images=[[]] if sees_images(model) else None)[0]
        except StdecError as err:
            raise p.ApiError(400, str(err)) from None
        return await run(request, body, ids, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = p.parse(await request.body(), p.ChatRequest, config.max_body_bytes)
        check_model(body)
        try:
            urls = body.image_urls()
            require_vision(model, len(urls))
            images = read_images(urls, config.image_dir)
            messages = body.conversation()
            system = getattr(model, "system_prompt", None)  # the model's own, unless given
            if system and not any(m["role"] == "system" for m in messages):
                messages = [{"role": "system", "content": system}, *messages]
            ids = encode_chat(tokenizer, messages, len(images) if sees_images(model) else None)
        except StdecError as err:
            raise p.ApiError(400, str(err), param="messages") from None
        return await run(request, body, ids, chat=True, images=images)

    def check_model(body):
        if body.model != config.name:
            raise p.ApiError(404, f"model {body.model!r} does not exist here; this server "
                             f"serves {config.name!r}.", param="model",
                             kind="not_found_error")

    async def run(request: Request, body, ids: list[int], chat: bool, images: list = ()):
        prompt_tokens = model.prompt_length(ids, images) if images else len(ids)
        cfg = p.decode_config(body, config.defaults, max_length, prompt_tokens)
        runner: Runner = state["runner"]
        if runner.draining:
            raise p.ApiError(503, "the server is shutting down; send the request elsewhere.",
                             "server_error")
        if runner.queued >= config.max_queue:
            raise p.ApiError(429, f"the queue is full ({config.max_queue} requests waiting); "
                             "retry in a second.", "rate_limit_error", headers={"Retry-After": "1"})
        bridge = Bridge(asyncio.get_running_loop())
        stops = body.stops()
        job = Job(ids, cfg, bridge, time.monotonic() + config.timeout,
                  progress=body.stream or bool(stops), images=list(images) or None)
        runner.submit(job)
        answer = Answer(tokenizer, eos, stops, cfg.gen_length)
        rid = p.completion_id(chat)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = stream(job, bridge, answer, rid, chat, body.stdec_canvas, include_usage,
                            prompt_tokens)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        while True:
            try:
                update = await asyncio.wait_for(bridge.updates.get(), 0.25)
            except TimeoutError:
                if await request.is_disconnected():  # nobody waits for it: free the slot
                    job.cancel()
                    metrics.count("cancelled")
                    return JSONResponse(p.error_body("client disconnected"), 499)
                continue
            done = answer.update(job, *update)
            if done:
                break
        if answer.error is not None:
            raise_failure(job, answer)
        metrics.finish(job, answer)
        return p.response(rid, config.name, chat, answer.text, answer.finish,
                          answer.usage(prompt_tokens), answer.stats(job))

    def raise_failure(job: Job, answer: "Answer"):
        metrics.count("failed")
        timed_out = "timed out" in answer.error
        status = 504 if timed_out else 503 if answer.error == SHUTDOWN else 500
        raise p.ApiError(status, answer.error + ".", "timeout" if timed_out else "server_error")

    async def stream(job: Job, bridge: Bridge, answer: "Answer", rid: str, chat: bool,
                     canvas: bool, include_usage: bool, prompt_tokens: int
                     ) -> AsyncIterator[str]:
        sent, seen_steps = "", None
        try:
            # at once, as OpenAI does: the role (chat) and an empty text, so a client knows
            # it was admitted before any token is decoded
            yield _sse(p.chunk(rid, config.name, chat, "", first=True))
            while True:
                update = await bridge.updates.get()
                done = answer.update(job, *update)
                if canvas and update[3]:
                    steps = update[3]
                    new = [[i, answer.tokens[i], s] for i, s in enumerate(steps)
                           if s > 0 and (seen_steps is None or seen_steps[i] <= 0)]
                    seen_steps = steps
                    if new:
                        event = {"id": rid, "object": "stdec.canvas", "model": config.name,
                                 "choices": [], "stdec": {"commits": new}}
                        yield f"event: stdec.canvas\ndata: {json.dumps(event)}\n\n"
                if answer.error is not None:
                    metrics.count("failed")
                    body = p.error_body(answer.error + ".", "server_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    return
                text = answer.text if done else answer.safe_text()
                if text.startswith(sent) and len(text) > len(sent):
                    yield _sse(p.chunk(rid, config.name, chat, text[len(sent):]))
                    sent = text
                if done:
                    break
            yield _sse(p.chunk(rid, config.name, chat, None if chat else "", answer.finish))
            if include_usage:
                last = p.chunk(rid, config.name, chat, None)
                last.update(choices=[], usage=answer.usage(prompt_tokens),
                            stdec=answer.stats(job))
                yield _sse(last)
            metrics.finish(job, answer)
            yield "data: [DONE]\n\n"
        finally:
            if not job.finished and answer.finish is None:  # the client went away
                job.cancel()
                metrics.count("cancelled")

    return app


class Answer:
    """The text of a job as it grows: the committed prefix up to the first EOS, cut at the
    first stop string."""

    def __init__(self, tokenizer, eos: set[int], stops: list[str], gen_length: int):
        self.tokenizer, self.eos, self.stops, self.gen_length = tokenizer, eos, stops, gen_length
        self.text, self.tokens = "", []
        self.finish: str | None = None
        self.error: str | None = None
        self.completion_tokens = 0

    def update(self, job: Job, state: str, committed: int, tokens: list[int], steps) -> bool:
        """Take one update from the engine; True when the answer is final."""
        if self.finish is not None:
            return True
        self.tokens = tokens
        prefix = tokens[:committed] if state != "done" else tokens
        cut = next((i for i, t in enumerate(prefix) if t in self.eos), None)
        ids = prefix if cut is None else prefix[:cut]
        self.text = self.tokenizer.decode(ids, skip_special_tokens=True)
        self.completion_tokens = len(ids)
        hits = [self.text.find(s) for s in self.stops if s in self.text]
        if hits:  # the rest of the decode is not needed
            self.text, self.finish = self.text[: min(hits)], "stop"
            job.cancel()
            return True
        if state == "done":
            self.finish = "length" if cut is None and len(tokens) >= self.gen_length else "stop"
            return True
        if state in ("failed", "cancelled"):
            self.error = job.error or "the request was cancelled"
            return True
        return False

    def safe_text(self) -> str:
        """What may be streamed now: not a half-decoded character, nor the first characters
        of a stop string that may yet complete."""
        text = self.text.rstrip("\ufffd")
        hold = max((len(s) - 1 for s in self.stops), default=0)
        return text[: len(text) - hold] if hold else text

    def usage(self, prompt_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": prompt_tokens + self.completion_tokens}

    @staticmethod
    def stats(job: Job) -> dict:
        cfg = job.config
        out = {"policy": cfg.policy, "cache": cfg.cache, "gen_length": cfg.gen_length,
               "block_length": cfg.block_length, "nfe": job.nfe}
        if job.stats is not None:
            out.update({k: v for k, v in asdict(job.stats).items() if k != "nfe"})
        else:  # cut short by a stop string
            out["tpf"] = 0.0 if not job.nfe else round(job.committed / job.nfe, 4)
        return out


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"
