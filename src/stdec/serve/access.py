"""What every HTTP request passes before its route: its request id, the API key, an answer
for an error no route caught, and one access-log line.

Plain ASGI middleware, not Starlette's BaseHTTPMiddleware, so that streams and a client's
hang-up reach the routes untouched.
"""

import hmac
import json
import logging
import re
import time
import uuid

from stdec.serve import protocol as p
from stdec.serve.metrics import Metrics

__all__ = ["LOG", "OPEN", "Access"]

LOG = logging.getLogger("stdec.serve.access")
OPEN = ("/health", "/ready")  # answered without the API key
_ID = re.compile(r"[\x21-\x7e]{1,128}")  # an X-Request-ID echoed as given: safe in a log line


class Access:
    """X-Request-ID echoed (or made, when absent or unfit) on every response; with an API
    key, 401 for a request without it (`Authorization: Bearer KEY`) except OPEN paths; an
    uncaught error answered with the error JSON (and raised on, for the server's log); one
    log line per request: id, method, path, status, tokens, seconds."""

    def __init__(self, app, *, api_key: str | None, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self.key = None if api_key is None else api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, headers = time.perf_counter(), dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 0

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            refusal = self.refusal(scope["path"], headers.get(b"authorization"))
            if refusal is not None:
                self.metrics.count("unauthorized")
                await _json(send_with_id, 401, p.error_body(refusal, code="invalid_api_key"),
                            [(b"www-authenticate", b"Bearer")])
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as err:
            if not status:  # nothing sent yet: one sentence, not a traceback
                await _json(send_with_id, 500, p.error_body(
                    f"internal error: {type(err).__name__}: {err}", "server_error"))
            raise
        finally:
            LOG.info("%s %s %s %d %d tokens %.3f s", rid, scope["method"], scope["path"],
                     status or 500, state.get("tokens", 0), time.perf_counter() - start)

    def refusal(self, path: str, authorization: bytes | None) -> str | None:
        """Why a request may not pass (one sentence), or None."""
        if self.key is None or path in OPEN:
            return None
        if not authorization:
            return "no API key was sent; send it as the header Authorization: Bearer KEY."
        scheme, _, key = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(key.strip(), self.key):
            return "the API key is wrong; send this server's key as Authorization: Bearer KEY."
        return None


async def _json(send, status: int, body: dict, headers=()):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})
