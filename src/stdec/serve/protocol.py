"""Request and response schemas of the OpenAI-compatible API, and its error JSON.

Requests are parsed from the raw body here, so every failure is one sentence with a status:
400 (bad value), 404 (unknown model), 413 (body too large), 429 (queue full). stdec's own
decoding options (policy, cache, tau, ...) arrive as extra body fields and are validated
by DecodeConfig itself.
"""

import json
import math
import time
import uuid
from dataclasses import fields, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from stdec.decoding.config import DecodeConfig
from stdec.errors import StdecError
from stdec.models.images import IMAGE_PLACEHOLDER

__all__ = ["ApiError", "ChatRequest", "CompletionRequest", "DECODE_OPTIONS", "decode_config",
           "error_body", "parse"]

DECODE_OPTIONS = {f.name for f in fields(DecodeConfig)} - {"temperature", "seed"}
# OpenAI fields a client may send that change nothing here
IGNORED = {"user", "top_p", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
           "top_logprobs", "echo", "suffix", "best_of", "response_format", "service_tier",
           "store", "metadata", "parallel_tool_calls"}


class ApiError(Exception):
    """An HTTP error with OpenAI's error JSON; `message` is one sentence."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.headers = headers or {}


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    # stdec: stream an extra `stdec.canvas` event with each committed position and its step
    stdec_canvas: bool = False

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CompletionRequest(_Common):
    prompt: str | list[str]

    def text(self) -> str:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise ApiError(400, f"prompt must be one string; got a list of {len(prompts)} (send "
                           "one request per prompt).", param="prompt")
        if not prompts[0].strip():
            raise ApiError(400, "prompt is empty; give some text.", param="prompt")
        return prompts[0]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = None

    def parts(self) -> list[tuple[str, str | None]]:
        """(text, image URL) of each content part; an image part's text is its placeholder."""
        if not isinstance(self.content, list):
            return [(self.content or "", None)]
        out = []
        for i, part in enumerate(self.content):
            kind = part.get("type")
            if kind == "text":
                out.append((str(part.get("text", "")), None))
            elif kind == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url:
                    raise ApiError(400, f"content part {i} has no image_url.url; give a "
                                   "data:image/...;base64 URL.", param="messages")
                out.append((IMAGE_PLACEHOLDER + "\n", url))
            else:
                raise ApiError(400, f"content part {i} has type {kind!r}; stdec reads 'text' and "
                               "'image_url' parts.", param="messages")
        return out

    def text(self) -> str:
        return "".join(text for text, _ in self.parts())

    def image_urls(self) -> list[str]:
        return [url for _, url in self.parts() if url is not None]


class ChatRequest(_Common):
    messages: list[Message]
    max_completion_tokens: int | None = None

    def conversation(self) -> list[dict]:
        if not self.messages:
            raise ApiError(400, "messages is empty; send at least one message.", param="messages")
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]

    def image_urls(self) -> list[str]:
        """Every image of the conversation, in the order its placeholders stand."""
        return [url for m in self.messages for url in m.image_urls()]


def parse(body: bytes, cls: type[_Common], max_bytes: int) -> _Common:
    """The request from a raw body, or an ApiError with one sentence."""
    if len(body) > max_bytes:
        raise ApiError(413, f"the request body has {len(body)} bytes; the limit is {max_bytes}.")
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON.") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object.")
    try:
        request = cls.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "body"
        raise ApiError(400, f"{where}: {e['msg'].rstrip('.')}.", param=where) from None
    unknown = set(request.options()) - DECODE_OPTIONS - IGNORED
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError(400, f"unknown field {name!r}; stdec's decoding options are "
                       f"{', '.join(sorted(DECODE_OPTIONS))}.", param=name)
    if request.n != 1:
        raise ApiError(400, f"n must be 1, got {request.n}; send one request per sample.",
                       param="n")
    return request


def decode_config(request: _Common, defaults: DecodeConfig, max_length: int,
                  prompt_tokens: int) -> DecodeConfig:
    """The request's DecodeConfig over the server's defaults, validated as DecodeConfig is."""
    options = {k: v for k, v in request.options().items() if k in DECODE_OPTIONS}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.seed is not None:
        options["seed"] = request.seed
    max_tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens
    if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 1):
        raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}.",
                       param="max_tokens")
    block = options.get("block_length", defaults.block_length)
    if max_tokens is not None and isinstance(block, int) and block > 0:
        blocks = math.ceil(max_tokens / block)  # a whole number of blocks
        options["gen_length"] = blocks * block
        if "steps" not in options and defaults.steps is not None:  # the default steps per block
            options["steps"] = defaults.steps // defaults.num_blocks * blocks
    try:
        config = replace(defaults, **options)
    except StdecError as err:
        raise ApiError(400, str(err)) from None
    except TypeError as err:  # a wrongly typed option that the dataclass trips on
        raise ApiError(400, f"a decoding option has the wrong type ({err}).") from None
    if prompt_tokens + config.gen_length > max_length:
        raise ApiError(400, f"the prompt has {prompt_tokens} tokens and max_tokens asks for "
                       f"{config.gen_length} (a multiple of block_length {config.block_length})"
                       f"; together they exceed the model's length {max_length}.",
                       param="max_tokens")
    return config


def completion_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def response(rid: str, model: str, chat: bool, text: str, finish: str, usage: dict,
             stats: dict) -> dict:
    choice = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {"id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice], "usage": usage,
            "stdec": stats}


def chunk(rid: str, model: str, chat: bool, text: str | None, finish: str | None = None,
          first: bool = False) -> dict:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
    if chat:
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}
