"""The serving logic behind the routes: a parsed request becomes an engine job, and the
job's updates become an answer, collected whole or streamed as its committed prefix grows.

Here a request is prepared off the event loop (`prepare`, on a worker thread: its body
parsed, its prompt encoded and its images read, its decoding options made a DecodeConfig by
decode_options, the one place that happens, its prompt held to --max-prompt-tokens), then
admitted or refused on the loop (503 draining, 429 full), and its text is cut at EOS and at
stop strings, with usage, finish_reason and stdec's stats.
"""

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stdec.api import encode, encode_chat, end_token_ids
from stdec.decoding.config import DecodeConfig, build, check_for_model
from stdec.decoding.engine import Request as Job
from stdec.errors import StdecError
from stdec.models.images import require_vision, sees_images
from stdec.serve import protocol as p
from stdec.serve.config import ServerConfig
from stdec.serve.metrics import Metrics
from stdec.serve.runner import SHUTDOWN, Bridge, Runner

__all__ = ["Answer", "Generation", "Prepared", "Serving", "decode_options", "prompt_limit",
           "read_images", "with_max_tokens"]


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
        return with_max_tokens(options, defaults, max_tokens)
    except StdecError as err:
        raise p.ApiError(400, str(err)) from None


def with_max_tokens(options: dict, defaults: Mapping, max_tokens: int | None) -> DecodeConfig:
    """`options` over `defaults`, gen_length exactly `max_tokens` (the last block shorter when
    need be; a default `steps` of the fixed rule kept at the same pace)."""
    options = dict(options)
    if max_tokens is not None:
        if "steps" not in options:  # a default steps is for the default gen_length
            base = build(options, defaults)
            if base.options().get("steps") is not None:
                options.update(_same_pace(base, max_tokens))
        options["gen_length"] = max_tokens
    return build(options, defaults)


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


def prompt_limit(config: ServerConfig, max_length: int) -> int:
    """The longest prompt, in tokens, the server takes: --max-prompt-tokens, or the model's
    length less one generated token; more than the model takes is refused."""
    if config.max_prompt_tokens is None:
        return max_length - 1
    if config.max_prompt_tokens > max_length - 1:
        raise StdecError(f"max_prompt_tokens is {config.max_prompt_tokens}, more than this "
                         f"model takes ({max_length - 1}: its length {max_length} less one "
                         "generated token); pass a smaller --max-prompt-tokens or none.")
    return config.max_prompt_tokens


def read_images(urls: list[str], image_dir: Path | None) -> list:
    """The images of a request, from data URLs or, inside `image_dir`, local paths (a
    file:// URL or a plain path; a relative one is taken inside `image_dir`); a network URL
    is refused, never fetched. An error shows a path as the request gave it, never where it
    lies on the server."""
    from stdec.models.images import load_image

    images = []
    for url in urls:
        local = not url.startswith("data:") and not re.match(r"[a-zA-Z][\w+.-]*://", url)
        if url.startswith("file://"):
            url, local = url.removeprefix("file://"), True
        if not local:
            images.append(load_image(url))
            continue
        shown = repr(url if len(url) <= 60 else url[:57] + "...")
        if image_dir is None:
            raise StdecError(f"image {shown} is a local path, and this server reads none "
                             "(start it with --image-dir DIR to allow a folder); send a "
                             "data:image/...;base64 URL.")
        try:
            path = (image_dir / url).resolve()
        except (OSError, ValueError):
            raise StdecError(f"image {shown} is not a usable path; send a data URL or a "
                             "path inside the server's --image-dir.") from None
        if not path.is_relative_to(image_dir):
            raise StdecError(f"image {shown} is outside the folder this server reads images "
                             "from (its --image-dir); send a data URL or a path inside it.")
        images.append(load_image(path, name=shown))
    return images


@dataclass
class Prepared:
    """A request ready to be scheduled: what `Serving.prepare` made of its body."""

    body: p.CompletionRequest | p.ChatRequest
    ids: list[int]
    images: list
    config: DecodeConfig
    prompt_tokens: int


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
    top_logprobs: int | None  # None: no logprobs; else each token's, and this many alternatives
    t0: float  # time.perf_counter() at the request's arrival
    state: Any  # the request's state: the access log reads `tokens` from it
    ended: bool = False  # its outcome is counted


class Serving:
    """A request's way from its raw body to its answer, over the engine's thread."""

    def __init__(self, model, tokenizer, config: ServerConfig, runner: Runner, metrics: Metrics):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.runner, self.metrics = runner, metrics
        self.max_length = model.config.max_sequence_length
        self.max_prompt_tokens = prompt_limit(config, self.max_length)
        self.eos = set(end_token_ids(tokenizer))
        # no token spans more characters than the vocabulary's longest, so a prompt longer
        # than max_prompt_tokens of those is refused before it is tokenized
        vocab = getattr(tokenizer, "get_vocab", None)
        self.chars_per_token = max(map(len, vocab()), default=0) if vocab else 0

    def prepare(self, raw: bytes, chat: bool) -> Prepared:
        """Parse the body, check the model name, build the prompt (its images read) and its
        DecodeConfig; a worker thread's work, so that no prompt holds up the event loop."""
        body = p.parse(raw, p.ChatRequest if chat else p.CompletionRequest,
                       self.config.max_body_bytes)
        self.check_model(body)
        ids, images = self.chat_prompt(body) if chat else self.completion_prompt(body)
        cfg = decode_options(body, self.config.defaults)
        try:
            check_for_model(cfg, self.model)
        except StdecError as err:  # the option the sentence names first
            named = min((str(err).find(o), o) for o in ("prefix_lm", "compat", "suppress_ids")
                        if o in str(err))[1]
            raise p.ApiError(400, str(err), param=named) from None
        try:
            prompt_tokens = (self.model.prompt_length(ids, images, cfg.image_mode) if images
                             else len(ids))
        except StdecError as err:  # past the checkpoint's tokenizer_model_max_length
            raise p.ApiError(400, str(err), param="messages") from None
        if prompt_tokens > self.max_prompt_tokens:
            raise p.ApiError(413, f"the prompt has {prompt_tokens} tokens; this server takes "
                             f"at most {self.max_prompt_tokens}.",
                             param="messages" if chat else "prompt")
        check_length(cfg, prompt_tokens, self.max_length)
        return Prepared(body, ids, images, cfg, prompt_tokens)

    def check_model(self, body: p.CompletionRequest | p.ChatRequest):
        if body.model != self.config.name:
            raise p.ApiError(404, f"model {body.model!r} does not exist here; this server "
                             f"serves {self.config.name!r}.", param="model",
                             kind="not_found_error")

    def check_characters(self, chars: int, param: str):
        """A prompt too long to tokenize: 413 at once, from its length in characters."""
        if self.chars_per_token and chars > self.max_prompt_tokens * self.chars_per_token:
            raise p.ApiError(413, f"the prompt has {chars} characters, too many for this "
                             f"server's limit of {self.max_prompt_tokens} prompt tokens.",
                             param=param)

    def completion_prompt(self, body: p.CompletionRequest) -> tuple[list[int], list]:
        """The prompt's ids (and no images)."""
        text = body.text()
        self.check_characters(len(text), "prompt")
        try:
            ids = encode(self.tokenizer, [text], chat=False,
                         images=[[]] if sees_images(self.model) else None)[0]  # no <image>
        except StdecError as err:
            raise p.ApiError(400, str(err)) from None
        return ids, []

    def chat_prompt(self, body: p.ChatRequest) -> tuple[list[int], list]:
        """The conversation's ids under the chat template, and its images."""
        messages = body.conversation()
        self.check_characters(sum(len(m["content"]) for m in messages), "messages")
        try:
            urls = body.image_urls()
            require_vision(self.model, len(urls))
            images = read_images(urls, self.config.image_dir)
            system = getattr(self.model, "system_prompt", None)  # the model's own, unless given
            if system and not any(m["role"] == "system" for m in messages):
                messages = [{"role": "system", "content": system}, *messages]
            seen = len(images) if sees_images(self.model) else None
            ids = encode_chat(self.tokenizer, messages, seen,
                              getattr(self.model, "drop_after_image", False))
        except StdecError as err:
            raise p.ApiError(400, str(err), param="messages") from None
        return ids, images

    def schedule(self, prep: Prepared, *, chat: bool, t0: float, state: Any) -> Generation:
        """Admit the request onto the engine's thread, or refuse it (503, 429). Admission
        counts free slots: with F free and --max-queue Q, F + Q requests are taken at once."""
        if self.runner.draining:
            self.metrics.count("rejected")
            raise p.ApiError(503, "the server is shutting down; send the request elsewhere.",
                             "server_error")
        if self.runner.load >= self.config.max_batch + self.config.max_queue:
            self.metrics.count("rejected")
            raise p.ApiError(429, f"the server is full (its {self.config.max_batch} slots and "
                             f"a queue of {self.config.max_queue} are taken); retry in a "
                             "second.", "rate_limit_error", headers={"Retry-After": "1"})
        body, bridge = prep.body, Bridge(asyncio.get_running_loop())
        stops = body.stops()
        job = Job(prep.ids, prep.config, bridge, time.monotonic() + self.config.timeout,
                  progress=body.stream or bool(stops), images=list(prep.images) or None)
        self.runner.submit(job)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        answer = Answer(self.tokenizer, self.eos, stops, prep.config.gen_length)
        return Generation(job, bridge, answer, p.completion_id(chat), chat, prep.prompt_tokens,
                          body.stream, body.stdec_canvas, include_usage,
                          body.top_logprobs_asked(), t0, state)

    def end(self, gen: Generation, outcome: str):
        """A scheduled request ended: its outcome, times and tokens go to the metrics."""
        job, t0 = gen.job, gen.t0
        gen.ended = True
        gen.state.tokens = gen.answer.completion_tokens
        self.metrics.ended(outcome, seconds=time.perf_counter() - t0,
                           queue_s=job.t_admit - t0 if job.t_admit else None,
                           ttft_s=job.t_first - t0 if job.t_first else None,
                           tokens=gen.answer.completion_tokens)

    def close(self, gen: Generation):
        """Nobody waits for the answer any more: cancel the request unless it has ended (its
        slot frees at the next step)."""
        if not gen.ended:
            gen.job.cancel()
            self.end(gen, "cancelled")

    async def collect(self, gen: Generation, receive: Callable[[], Awaitable[dict]]) -> dict:
        """The whole answer as one response. A client that hangs up meanwhile cancels its
        request at once."""
        job, answer = gen.job, gen.answer
        watcher = asyncio.create_task(_hang_up(receive, lambda: self.close(gen)))
        try:
            while not answer.update(job, *await gen.bridge.updates.get()):
                pass
        finally:
            watcher.cancel()
            if answer.finish is None and answer.error is None:  # this task was cancelled
                self.close(gen)
        if gen.ended:  # the client hung up: cancelled and counted
            raise p.ApiError(499, "the client hung up before its answer was ready.")
        if answer.error is not None:
            self.end(gen, "failed")
            timed_out = "timed out" in answer.error
            status = 504 if timed_out else 503 if answer.error == SHUTDOWN else 500
            raise p.ApiError(status, answer.error + ".",
                             "timeout" if timed_out else "server_error")
        self.end(gen, "completed")
        logprobs = None
        if gen.top_logprobs is not None:
            logprobs = p.logprobs_of(answer.pieces(), answer.logprobs(), gen.chat,
                                     gen.top_logprobs)
        return p.response(gen.rid, self.config.name, gen.chat, answer.text, answer.finish,
                          answer.usage(gen.prompt_tokens), answer.stats(job),
                          logprobs).model_dump()

    async def stream(self, gen: Generation) -> AsyncIterator[str]:
        """Server-sent events: each new piece of the committed prefix, then the finish. A
        client that hangs up ends this generator (Starlette cancels it), which cancels its
        request at once (`close`; the route's response calls it too, should this generator
        never start)."""
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
                    self.end(gen, "failed")
                    body = p.error_body(answer.error + ".", "server_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    return
                text = answer.text if done else answer.safe_text()
                if text.startswith(sent) and len(text) > len(sent):
                    yield _sse(p.chunk(rid, name, chat, text[len(sent):]))
                    sent = text
                if done:
                    break
            self.end(gen, "completed")
            yield _sse(p.chunk(rid, name, chat, None if chat else "", answer.finish))
            if gen.include_usage:
                yield _sse(p.usage_chunk(rid, name, chat, answer.usage(gen.prompt_tokens),
                                         answer.stats(job)))
            yield "data: [DONE]\n\n"
        finally:
            self.close(gen)  # unless it ended: the client went away


async def _hang_up(receive: Callable[[], Awaitable[dict]], then: Callable[[], None]):
    """Wait until the client hangs up, then call `then`."""
    while (await receive())["type"] != "http.disconnect":
        pass
    then()


class Answer:
    """The text of a job as it grows: the committed prefix up to the first EOS, cut at the
    first stop string."""

    def __init__(self, tokenizer, eos: set[int], stops: list[str], gen_length: int):
        self.tokenizer, self.eos, self.stops, self.gen_length = tokenizer, eos, stops, gen_length
        self.text, self.tokens, self.ids = "", [], []
        self.confidence: list[float] = []
        self.finish: str | None = None
        self.error: str | None = None
        self.completion_tokens = 0

    def update(self, job: Job, state: str, committed: int, tokens: list[int], steps,
               confidence: list[float]) -> bool:
        """Take one update from the engine; True when the answer is final."""
        if self.finish is not None:
            return True
        self.tokens, self.confidence = tokens, confidence
        prefix = tokens[:committed] if state != "done" else tokens
        cut = next((i for i, t in enumerate(prefix) if t in self.eos), None)
        ids = prefix if cut is None else prefix[:cut]
        self.text = self.tokenizer.decode(ids, skip_special_tokens=True)
        self.ids, self.completion_tokens = ids, len(ids)
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

    def pieces(self) -> list[str]:
        """The text of each completion token."""
        return [self.tokenizer.decode([t]) for t in self.ids]

    def logprobs(self) -> list[float]:
        """Each completion token's log-probability at the step that committed it."""
        return [math.log(max(c, 1e-45)) for c in self.confidence[: len(self.ids)]]  # (JSON: finite)

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
