"""ServerConfig: what `stdec serve` is told on its command line, in one validated dataclass."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stdec.decoding.config import DecodeConfig, Defaults, build
from stdec.errors import StdecError

__all__ = ["ServerConfig"]


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How to serve. Every value is checked here, before any model work starts."""

    name: str = field(metadata={"help": "the model name clients send (--served-model-name)"})
    defaults: DecodeConfig | Mapping = field(
        metadata={"help": "decoding options of a request that sets none of its own: a "
                  "DecodeConfig, or a checkpoint's Defaults (every rule's setting) with the "
                  "command line's options over them"})
    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(8000, "port to listen on, 1..65535")
    max_batch: int = _opt(8, "engine slots: requests decoded together")
    max_queue: int = _opt(64, "requests that may wait when every slot is taken; more get 429")
    timeout: float = _opt(600.0, "seconds a request may take, queueing included")
    drain: float = _opt(
        30.0, "seconds a shutdown lets in-flight requests finish before it cancels them")
    max_body_bytes: int = _opt(32 << 20, "largest request body accepted (413 beyond it)")
    max_prompt_tokens: int | None = _opt(
        None, "longest prompt in tokens, images included (413 beyond it; None: the model's "
        "length less one)")
    api_key: str | None = field(default=None, repr=False, metadata={
        "help": "the key clients send as `Authorization: Bearer KEY` (None: no key needed; "
        "/health and /ready never need one)"})
    image_dir: Path | None = _opt(
        None, "a folder whose images requests may name by local path, a relative one taken "
        "inside it (None: data URLs only; network URLs are never fetched); a relative folder "
        "is taken from where the server starts")

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise StdecError(f"name (the served model name) must be a non-empty string, got "
                             f"{self.name!r}; pass --served-model-name NAME.")
        if isinstance(self.defaults, DecodeConfig):  # its own rule's options only
            object.__setattr__(self, "defaults", Defaults(self.defaults.options()))
        if not isinstance(self.defaults, Mapping):
            raise StdecError(f"defaults must be a DecodeConfig or a mapping of decoding "
                             f"options, got {type(self.defaults).__name__}.")
        build(None, self.defaults)  # bad defaults fail here, naming the option
        if not isinstance(self.host, str) or not self.host:
            raise StdecError(f"host must be an address such as 127.0.0.1, got {self.host!r}.")
        if not _is_int(self.port) or not 1 <= self.port <= 65535:
            raise StdecError(f"port must be an integer in 1..65535, got {self.port!r}.")
        for name in ("max_batch", "max_body_bytes"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise StdecError(f"{name} must be a positive integer, got "
                                 f"{getattr(self, name)!r}.")
        if not _is_int(self.max_queue) or self.max_queue < 0:
            raise StdecError(f"max_queue must be an integer >= 0 (0: no request waits), got "
                             f"{self.max_queue!r}.")
        if self.max_prompt_tokens is not None and (not _is_int(self.max_prompt_tokens)
                                                   or self.max_prompt_tokens < 1):
            raise StdecError(f"max_prompt_tokens must be a positive integer or None (the "
                             f"model's length less one), got {self.max_prompt_tokens!r}.")
        if self.api_key is not None and (not isinstance(self.api_key, str)
                                         or not re.fullmatch(r"[\x21-\x7e]+", self.api_key)):
            # the value is not shown: it is a secret
            raise StdecError("api_key must be printable ASCII without spaces (what a client "
                             "sends after `Authorization: Bearer`), or None.")
        if not _is_number(self.timeout) or not self.timeout > 0:
            raise StdecError(f"timeout must be > 0 seconds, got {self.timeout!r}.")
        if not _is_number(self.drain) or not self.drain >= 0:
            raise StdecError(f"drain must be >= 0 seconds (0: cancel in-flight requests at "
                             f"once), got {self.drain!r}.")
        if self.image_dir is not None:
            folder = Path(self.image_dir)
            if not folder.is_dir():
                raise StdecError(f"image_dir {str(self.image_dir)!r} is not a folder; give the "
                                 "folder whose images clients may name by path.")
            object.__setattr__(self, "image_dir", folder.resolve())


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
