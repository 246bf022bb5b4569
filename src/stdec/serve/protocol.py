"""The typed protocol of the OpenAI-compatible API: request and response schemas, and its
error JSON.

Requests are parsed from the raw body here, so every failure is one sentence with a status:
400 (bad value), 413 (body too large). stdec's own decoding options (policy, cache, tau, ...)
arrive as extra body fields, named by decode_option_names(); serving.decode_options turns them into
a DecodeConfig, which validates them.
"""

import itertools
import json
import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from stdec.decoding.config import DecodeConfig
from stdec.models.images import IMAGE_PLACEHOLDER

__all__ = ["ApiError", "CanvasEvent", "ChatCompletionChunk",
           "ChatCompletionResponse", "ChatRequest", "CompletionChunk", "CompletionRequest",
           "CompletionResponse", "ErrorResponse", "Health", "ModelList", "Usage", "chunk",
           "completion_id", "error_body", "parse", "response", "usage_chunk"]

def decode_option_names() -> set[str]:
    """stdec's decoding options a request may send: the shared ones and every registered
    rule's (temperature and seed are OpenAI's own fields)."""
    return set(DecodeConfig.option_help()) - {"temperature", "seed"}
# OpenAI fields that label a request and ask nothing of the decode: accepted as they come
LABELS = {"user", "metadata", "service_tier", "parallel_tool_calls"}
# OpenAI fields stdec honours only at their neutral value: name -> (is it neutral, the hint)
NEUTRAL = {
    "top_p": (lambda v: v is None or v == 1, "dLLM decoding here has no nucleus sampling; "
              "leave top_p at 1 and use temperature"),
    "presence_penalty": (lambda v: not v, "stdec applies no penalties; leave it at 0"),
    "frequency_penalty": (lambda v: not v, "stdec applies no penalties; leave it at 0"),
    "logit_bias": (lambda v: not v, "stdec biases no logits; leave it out"),
    "echo": (lambda v: not v, "the answer never repeats the prompt; leave echo false"),
    "suffix": (lambda v: not v, "stdec completes no suffix; leave it out"),
    "best_of": (lambda v: v is None or v == 1, "send one request per sample"),
    "response_format": (lambda v: v is None or v == {"type": "text"},
                        "stdec constrains no output format; send {\"type\": \"text\"} or "
                        "leave it out"),
    "store": (lambda v: not v, "stdec stores no completions; leave store false"),
}


class ApiError(Exception):
    """An HTTP error with OpenAI's error JSON; `message` is one sentence."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.headers = headers or {}


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error JSON (ErrorResponse) as a dict."""
    info = ErrorInfo(message=message, type=kind, param=param, code=code)
    return ErrorResponse(error=info).model_dump()


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
    # each token's log-probability at its commit; N > 0 also asks for the N most likely
    logprobs: int | None = None

    def top_logprobs_asked(self) -> int | None:
        return self.logprobs

    def text(self) -> str:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise ApiError(400, f"prompt must be one string; got a list of {len(prompts)} (send "
                           "one request per prompt).", param="prompt")
        if not prompts[0] or prompts[0].isspace():  # (no copy of a long prompt)
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
    logprobs: bool = False  # each token's log-probability at its commit
    top_logprobs: int | None = None

    def top_logprobs_asked(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

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
    known = decode_option_names()
    extra = request.options()
    unknown = set(extra) - known - LABELS - set(NEUTRAL)
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError(400, f"unknown field {name!r}; stdec's decoding options are "
                       f"{', '.join(sorted(known))}.", param=name)
    for name, (neutral, hint) in NEUTRAL.items():
        if name in extra and not neutral(extra[name]):
            raise ApiError(400, f"{name} {json.dumps(extra[name])} is not supported: {hint}.",
                           param=name)
    if request.n != 1:
        raise ApiError(400, f"n must be 1, got {request.n}; send one request per sample.",
                       param="n")
    check_logprobs(request)
    return request


def check_logprobs(request: CompletionRequest | ChatRequest):
    """Log-probabilities are each committed token's at the step it was committed; the most
    likely alternatives are not kept, except that greedy decoding commits the most likely
    token, so one alternative (itself) is exact there."""
    top = request.top_logprobs_asked()
    if top is None:
        if isinstance(request, ChatRequest) and request.top_logprobs:
            raise ApiError(400, "top_logprobs needs logprobs true.", param="top_logprobs")
        return
    name = "top_logprobs" if isinstance(request, ChatRequest) else "logprobs"
    if top < 0:
        raise ApiError(400, f"{name} must be >= 0, got {top}.", param=name)
    if request.stream:
        raise ApiError(400, "logprobs are given with whole answers only; send stream false.",
                       param="logprobs")
    greedy = not request.temperature
    if top > 1 or (top == 1 and not greedy):
        raise ApiError(400, f"{name} {top} asks for alternatives stdec does not keep: it has "
                       "each committed token's own log-probability (and, greedy, that token "
                       f"is the most likely one); send {name} 0" + (" or 1" if greedy else "")
                       + ".", param=name)


def completion_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


# ---- responses: field order is the order of the JSON keys ----

class _Out(BaseModel):
    """A response object; the fields named in `omit_none` are left out while None."""

    omit_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in self.omit_none}


class ErrorInfo(BaseModel):
    message: str  # one sentence
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Choice(BaseModel):
    index: int = 0
    finish_reason: str | None = None  # "stop" or "length"; None until the last chunk
    logprobs: dict | None = None


class CompletionChoice(_Choice):
    text: str


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Choice):
    message: ChatMessage


class DeltaMessage(_Out):
    omit_none = ("role", "content")

    role: Literal["assistant"] | None = None  # the first chunk only
    content: str | None = None


class ChatChunkChoice(_Choice):
    delta: DeltaMessage


class _Reply(_Out):
    id: str
    object: str
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list


class _Response(_Reply):
    usage: Usage
    stdec: dict[str, Any]  # the decode's settings and stats


class CompletionResponse(_Response):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ChatCompletionResponse(_Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class _Chunk(_Reply):
    omit_none = ("usage", "stdec")

    usage: Usage | None = None  # the last chunk only, when stream_options.include_usage
    stdec: dict[str, Any] | None = None


class CompletionChunk(_Chunk):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ChatCompletionChunk(_Chunk):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "stdec"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    active_slots: int
    queued: int  # requests waiting for a slot
    max_batch: int


class CanvasEvent(BaseModel):
    """stdec's `stdec.canvas` stream event: [position, token id, step] of each new commit."""

    id: str
    object: Literal["stdec.canvas"] = "stdec.canvas"
    model: str
    choices: list = []
    stdec: dict[str, Any]  # {"commits": [[position, token id, step], ...]}


def response(rid: str, model: str, chat: bool, text: str, finish: str, usage: Usage,
             stats: dict, logprobs: dict | None = None
             ) -> CompletionResponse | ChatCompletionResponse:
    if chat:
        return ChatCompletionResponse(id=rid, model=model, usage=usage, stdec=stats, choices=[
            ChatChoice(finish_reason=finish, message=ChatMessage(content=text),
                       logprobs=logprobs)])
    return CompletionResponse(id=rid, model=model, usage=usage, stdec=stats, choices=[
        CompletionChoice(finish_reason=finish, text=text, logprobs=logprobs)])


def logprobs_of(pieces: list[str], logprobs: list[float], chat: bool, top: int) -> dict:
    """A choice's `logprobs` in OpenAI's shape: `pieces` the text of each token, `logprobs`
    its log-probability; `top` 1 lists each token as its own most likely alternative."""
    if chat:
        return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                             "top_logprobs": [{"token": t, "logprob": lp,
                                               "bytes": list(t.encode())}] * top}
                            for t, lp in zip(pieces, logprobs, strict=True)],
                "refusal": None}
    offsets = [0, *itertools.accumulate(len(t) for t in pieces)][: len(pieces)]
    return {"tokens": pieces, "token_logprobs": logprobs,
            "top_logprobs": [{t: lp} for t, lp in zip(pieces, logprobs, strict=True)]
            if top else None, "text_offset": offsets}


def chunk(rid: str, model: str, chat: bool, text: str | None, finish: str | None = None,
          first: bool = False) -> CompletionChunk | ChatCompletionChunk:
    if chat:
        delta = DeltaMessage(role="assistant" if first else None, content=text)
        return ChatCompletionChunk(id=rid, model=model, choices=[
            ChatChunkChoice(finish_reason=finish, delta=delta)])
    return CompletionChunk(id=rid, model=model, choices=[
        CompletionChoice(finish_reason=finish, text=text or "")])


def usage_chunk(rid: str, model: str, chat: bool, usage: Usage,
                stats: dict) -> CompletionChunk | ChatCompletionChunk:
    """The last chunk of a stream with stream_options.include_usage: no choices."""
    cls = ChatCompletionChunk if chat else CompletionChunk
    return cls(id=rid, model=model, choices=[], usage=usage, stdec=stats)
