"""The serving logic behind the routes: a parsed request becomes an engine job, and the
job's updates become an answer, collected whole or streamed as its committed prefix grows.

Here a request's prompt is encoded and its images read, its decoding options become a
DecodeConfig (decode_options, the one place that happens), it is admitted or refused
(503 draining, 429 queue full), and its text is cut at EOS and at stop strings, with usage,
finish_reason and stdec's stats.
"""

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel

from stdec.api import encode, encode_chat, end_token_ids
from stdec.decoding.config import DecodeConfig, build
from stdec.decoding.engine import Request as Job
from stdec.errors import StdecError
from stdec.models.images import require_vision, sees_images
from stdec.serve import protocol as p
from stdec.serve.config import ServerConfig
from stdec.serve.metrics import Metrics
from stdec.serve.runner import SHUTDOWN, Bridge, Runner

__all__ = ["Answer", "Generation", "Serving", "decode_options", "read_images"]


# ---- the one place a request's decoding options become a DecodeConfig ----
# (stdec's extra body fields p.decode_option_names(), temperature, seed, max_tokens over the
# server's defaults; every error is a 400 with DecodeConfig's own sentence)

def decode_options(body: p.CompletionRequest | p.ChatRequest,
                   defaults: Mapping) -> DecodeConfig:
    """The request's DecodeConfig over the server's defaults, through the one builder
    (decoding.config.build) every entrance uses; its sentence becomes a 400."""
    options = {k: v for k, v in body.options().items() if k in p.decode_option_names()}
    if body.temperature is not None:
        options["temperature"] = body.temperature
    if body.seed is not None:
        options["seed"] = body.seed
    max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens
    if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 1):
        raise p.ApiError(400, f"max_tokens must be at least 1, got {max_tokens}.",
                         param="max_tokens")
    try:
        if max_tokens is not None:
            options["gen_length"] = max_tokens  # the last block is shorter when need be
            base = build({k: v for k, v in options.items() if k != "gen_length"}, defaults)
            if "steps" not in options and base.options().get("steps") is not None:
                options.update(_same_pace(base, max_tokens))
        return build(options, defaults)
    except StdecError as err:
        raise p.ApiError(400, str(err)) from None


def _same_pace(base: DecodeConfig, gen_length: int) -> dict:
    """The fixed rule's default steps over a new gen_length at the same steps per block: as
    steps where they come out whole, else as tokens a step (k), which paces any length."""
    steps, bl = base.steps, base.block_length
    pace = steps * bl // base.gen_length  # steps of a whole block
    if pace * gen_length % bl == 0:
        return {"steps": pace * gen_length // bl}
    if bl % pace == 0:
        return {"steps": None, "k": bl // pace}
    return {"steps": steps}  # refused by the rule's own check, in its sentence


def check_length(config: DecodeConfig, prompt_tokens: int, max_length: int):
    if prompt_tokens + config.gen_length > max_length:
        raise p.ApiError(400, f"the prompt has {prompt_tokens} tokens and max_tokens asks for "
                         f"{config.gen_length}; together they exceed the model's length "
                         f"{max_length}.", param="max_tokens")


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


@dataclass
class Generation:
    """A request scheduled on the engine's thread, and what its response needs."""

    job: Job
    bridge: Bridge
    answer: "Answer"
    rid: str  # the response's id
    chat: bool
    prompt_tokens: int
    stream: bool  # answer with server-sent events
    canvas: bool  # stream stdec.canvas events
    include_usage: bool  # end the stream with a usage chunk


class Serving:
    """A request's way from its parsed body to its answer, over the engine's thread."""

    def __init__(self, model, tokenizer, config: ServerConfig, runner: Runner, metrics: Metrics):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.runner, self.metrics = runner, metrics
        self.max_length = model.config.max_sequence_length
        self.eos = set(end_token_ids(tokenizer))

    def check_model(self, body: p.CompletionRequest | p.ChatRequest):
        if body.model != self.config.name:
            raise p.ApiError(404, f"model {body.model!r} does not exist here; this server "
                             f"serves {self.config.name!r}.", param="model",
                             kind="not_found_error")

    def completion_prompt(self, body: p.CompletionRequest) -> tuple[list[int], list]:
        """The prompt's ids (and no images)."""
        try:
            ids = encode(self.tokenizer, [body.text()], chat=False,
                         images=[[]] if sees_images(self.model) else None)[0]
        except StdecError as err:
            raise p.ApiError(400, str(err)) from None
        return ids, []

    def chat_prompt(self, body: p.ChatRequest) -> tuple[list[int], list]:
        """The conversation's ids under the chat template, and its images."""
        try:
            urls = body.image_urls()
            require_vision(self.model, len(urls))
            images = read_images(urls, self.config.image_dir)
            messages = body.conversation()
            system = getattr(self.model, "system_prompt", None)  # the model's own, unless given
            if system and not any(m["role"] == "system" for m in messages):
                messages = [{"role": "system", "content": system}, *messages]
            seen = len(images) if sees_images(self.model) else None
            ids = encode_chat(self.tokenizer, messages, seen)
        except StdecError as err:
            raise p.ApiError(400, str(err), param="messages") from None
        return ids, images

    def schedule(self, body: p.CompletionRequest | p.ChatRequest, ids: list[int],
                 images: list, chat: bool) -> Generation:
        """Admit the request onto the engine's thread, or refuse it (400, 503, 429)."""
        prompt_tokens = self.model.prompt_length(ids, images) if images else len(ids)
        cfg = decode_options(body, self.config.defaults)
        check_length(cfg, prompt_tokens, self.max_length)
        if self.runner.draining:
            raise p.ApiError(503, "the server is shutting down; send the request elsewhere.",
                             "server_error")
        if self.runner.queued >= self.config.max_queue:
            raise p.ApiError(429, f"the queue is full ({self.config.max_queue} requests "
                             "waiting); retry in a second.", "rate_limit_error",
                             headers={"Retry-After": "1"})
        bridge = Bridge(asyncio.get_running_loop())
        stops = body.stops()
        job = Job(ids, cfg, bridge, time.monotonic() + self.config.timeout,
                  progress=body.stream or bool(stops), images=list(images) or None)
        self.runner.submit(job)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return Generation(job, bridge, Answer(self.tokenizer, self.eos, stops, cfg.gen_length),
                          p.completion_id(chat), chat, prompt_tokens, body.stream,
                          body.stdec_canvas, include_usage)

    async def collect(self, gen: Generation,
                      disconnected: Callable[[], Awaitable[bool]]) -> dict:
        """The whole answer as one response; a client gone meanwhile frees its slot."""
        job, answer = gen.job, gen.answer
        while True:
            try:
                update = await asyncio.wait_for(gen.bridge.updates.get(), 0.25)
            except TimeoutError:
                if await disconnected():  # nobody waits for it: free the slot
                    job.cancel()
                    self.metrics.count("cancelled")
                    raise p.ApiError(499, "client disconnected") from None
                continue
            if answer.update(job, *update):
                break
        if answer.error is not None:
            self.metrics.count("failed")
            timed_out = "timed out" in answer.error
            status = 504 if timed_out else 503 if answer.error == SHUTDOWN else 500
            raise p.ApiError(status, answer.error + ".",
                             "timeout" if timed_out else "server_error")
        self.metrics.finish(job, answer)
        return p.response(gen.rid, self.config.name, gen.chat, answer.text, answer.finish,
                          answer.usage(gen.prompt_tokens), answer.stats(job)).model_dump()

    async def stream(self, gen: Generation) -> AsyncIterator[str]:
        """Server-sent events: each new piece of the committed prefix, then the finish."""
        job, answer, rid, chat, name = gen.job, gen.answer, gen.rid, gen.chat, self.config.name
        sent, seen_steps = "", None
        try:
            # at once, as OpenAI does: the role (chat) and an empty text, so a client knows
            # it was admitted before any token is decoded
            yield _sse(p.chunk(rid, name, chat, "", first=True))
            while True:
                update = await gen.bridge.updates.get()
                done = answer.update(job, *update)
                if gen.canvas and update[3]:
                    steps = update[3]
                    new = [[i, answer.tokens[i], s] for i, s in enumerate(steps)
                           if s > 0 and (seen_steps is None or seen_steps[i] <= 0)]
                    seen_steps = steps
                    if new:
                        event = p.CanvasEvent(id=rid, model=name, stdec={"commits": new})
                        yield f"event: stdec.canvas\n{_sse(event)}"
                if answer.error is not None:
                    self.metrics.count("failed")
                    body = p.error_body(answer.error + ".", "server_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    return
                text = answer.text if done else answer.safe_text()
                if text.startswith(sent) and len(text) > len(sent):
                    yield _sse(p.chunk(rid, name, chat, text[len(sent):]))
                    sent = text
                if done:
                    break
            yield _sse(p.chunk(rid, name, chat, None if chat else "", answer.finish))
            if gen.include_usage:
                yield _sse(p.usage_chunk(rid, name, chat, answer.usage(gen.prompt_tokens),
                                         answer.stats(job)))
            self.metrics.finish(job, answer)
            yield "data: [DONE]\n\n"
        finally:
            if not job.finished and answer.finish is None:  # the client went away
                job.cancel()
                self.metrics.count("cancelled")


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

    def usage(self, prompt_tokens: int) -> p.Usage:
        return p.Usage(prompt_tokens=prompt_tokens, completion_tokens=self.completion_tokens,
                       total_tokens=prompt_tokens + self.completion_tokens)

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


def _sse(data: BaseModel) -> str:
    return f"data: {json.dumps(data.model_dump())}\n\n"
