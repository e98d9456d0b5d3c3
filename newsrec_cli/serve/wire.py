"""What goes over the wire: request bodies parsed as strict JSON, and error bodies that always render.

Python's json module (which FastAPI uses) accepts `NaN`, `Infinity` and lone surrogates such as
`"\\ud800"`, none of which is JSON (RFC 8259). They then reach a validation error that echoes
them back, and the response encoder refuses them: a 500. Here a body is parsed by pydantic-core's
JSON parser with `allow_inf_nan=False`, which refuses all three with the line and column, and
every 4xx body is made JSON-safe before it is rendered (`1e999` parses as infinity and is echoed
as the string "inf").

Error bodies have two documented shapes:
- 422: `{"detail": [{"loc", "msg", "type", "input"?, "ctx"?}]}`, FastAPI's own validation shape,
  for the app's own 422s too (unknown news IDs list them in `ctx.unknown`);
- every other 4xx and 503: `{"detail": "the reason"}`.

Every request body is bounded (`BodyLimit`, serve --max-body): refused with 413 by its
Content-Length, or, sent chunked, once the bytes counted pass the limit, before anything parses it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import pydantic_core
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from newsrec_cli.serve.errors import SHOWN_CHARS, SHOWN_IDS, ServeError, UnknownNews, cut, name_ids, shown_ids


class Message(BaseModel):
    """Every error but 422: the reason, one line."""

    detail: str


TOO_LARGE = "a body over the serve --max-body limit (1 MiB by default), refused unread"


# A news ID as the routes take it: what the store can hold one per line (no whitespace, no
# control character) and no longer than an ingested news' ID may be. In the schema, so that a
# schema-valid request is never refused for the shape of an ID; an unknown one is a documented 422.
NEWS_ID_CHAR = r"[^\s\x00-\x1f\x7f-\x9f]"
NEWS_ID_MAX = 128
NewsIdText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NEWS_ID_MAX,
        pattern=f"^{NEWS_ID_CHAR}+$",
        description=f"A news ID: 1 to {NEWS_ID_MAX} characters, no whitespace or control character.",
    ),
]
UNKNOWN_NEWS = (
    "The body breaks the schema, or names news IDs this service does not know "
    "(type unknown_news_ids: the first few in ctx.unknown, their number in ctx.count)."
)

MSG_CHARS = 300  # an error message's own length bound
MAX_ERROR_BYTES = 8192  # no 422 body is longer, whatever the request held


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413, before it is parsed (pure ASGI).

    A declared Content-Length over the limit is refused unread (the server discards the rest of
    the body); a body without one (chunked) is read here up to the limit, then refused as soon as
    the count passes it, else handed on whole. The memory a request takes stays under the limit
    whatever it sends."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared <= self.limit:
            await self.app(scope, receive, send)  # the server reads no more than declared
            return
        if declared is not None:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> AsgiMessage:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: a disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        # No Connection: close: the server reads and drops the rest, so the client that is still
        # sending gets this answer rather than a reset connection.
        reason = f"the request body is over the {self.limit:,}-byte limit (serve --max-body)"
        await JSONResponse(status_code=413, content={"detail": reason})(scope, _nothing, send)


async def _nothing() -> AsgiMessage:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length (the HTTP parser has refused one that is no number), or None."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body, allow_inf_nan=False)
            except ValueError as exc:  # FastAPI turns JSONDecodeError into its 422 json_invalid
                reason = f"not JSON (RFC 8259: no NaN, Infinity or lone surrogates): {exc}"
                raise json.JSONDecodeError(reason, body.decode("utf-8", "replace"), 0) from None
        return self._json


class StrictJsonRoute(APIRoute):
    """An APIRoute whose body is parsed by StrictJsonRequest (FastAPI's documented custom route)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as strings and lone surrogates escaped: always encodable."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def validation_detail(exc: ServeError) -> list[dict[str, Any]]:
    """One of the app's own 422s in the documented shape: unknown news IDs are named in `msg`
    and `ctx.unknown` (the first few, each cut short), with their `ctx.count`."""
    if isinstance(exc, UnknownNews):
        return [
            {
                "loc": ["body"],
                "msg": f"{exc.reason}: {name_ids(exc.ids)}",
                "type": "unknown_news_ids",
                "ctx": {"unknown": shown_ids(exc.ids), "count": len(exc.ids)},
            }
        ]
    return [{"loc": [], "msg": cut(exc.reason, MSG_CHARS), "type": "value_error"}]


def one_line(exc: ServeError) -> str:
    if isinstance(exc, UnknownNews):
        return f"{exc.reason}: {name_ids(exc.ids)}"
    return cut(exc.reason, MSG_CHARS)


def status_of(exc: ServeError, statuses: Mapping[type[ServeError], int]) -> int:
    """The status of the nearest class of `exc` in `statuses` (500 when none is there)."""
    for kind in type(exc).__mro__:
        if kind in statuses:
            return statuses[kind]
    return 500


class PathScrubber:
    """Takes the server's own folders out of a text for a client: each becomes its last name
    (`/srv/models/run/model.pt` -> `run/model.pt`). An error names the request's own fields and
    the file by name, never where the server keeps it. `roots()` gives the folders when called,
    so that those known only once loaded (the run an export names) are covered too."""

    def __init__(self, roots: Callable[[], list[str | Path | None]]) -> None:
        self.roots = roots

    def __call__(self, text: str) -> str:
        found: set[str] = set()
        for root in self.roots():
            if root:
                found |= {str(root), str(Path(root).resolve())}
        for root in sorted((r for r in found if len(r) > 1), key=len, reverse=True):
            text = text.replace(root, Path(root).name or root)
        return text


def serve_error_handler(
    statuses: Mapping[type[ServeError], int], scrub: Callable[[str], str]
) -> Callable[[Request, ServeError], Coroutine[Any, Any, JSONResponse]]:
    """The exception handler of the engine's domain errors: the status from `statuses`, the
    reason with the server's paths taken out by `scrub`."""

    async def handle(_request: Request, exc: ServeError) -> JSONResponse:
        status = status_of(exc, statuses)
        if status == 422:
            content: dict[str, Any] = {"detail": validation_detail(exc)}
        else:
            content = {"detail": scrub(one_line(exc))}
        return JSONResponse(status_code=status, content=json_safe(content))

    return handle


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content=bounded_errors(exc.errors()))


def bounded_errors(found: Sequence[Any]) -> dict[str, Any]:
    """FastAPI's 422 body for `found`, never larger than MAX_ERROR_BYTES whatever was sent: the
    first SHOWN_IDS errors, each input, context and message cut short, then how many more."""
    shown = [_bounded_error(e) for e in jsonable_encoder(list(found[:SHOWN_IDS]))]
    if len(found) > SHOWN_IDS:
        more = len(found) - SHOWN_IDS
        shown.append({"loc": [], "msg": f"and {more:,} more errors", "type": "more_errors"})
    content = {"detail": json_safe(shown)}
    if len(json.dumps(content)) > MAX_ERROR_BYTES:  # deep loc paths: say less rather than more
        content = {
            "detail": [{"loc": [], "msg": f"{len(found):,} errors in the body", "type": "value_error"}]
        }
    return content


def _bounded_error(error: dict[str, Any]) -> dict[str, Any]:
    out = {
        "loc": [cut(x) if isinstance(x, str) else x for x in error.get("loc", [])],
        "msg": cut(str(error.get("msg", "")), MSG_CHARS),
        "type": cut(str(error.get("type", ""))),
    }
    if "input" in error:
        out["input"] = bounded(error["input"], 1)
    if "ctx" in error:  # the rule broken (a bound, a pattern, the JSON parser's reason): kept longer
        out["ctx"] = bounded(error["ctx"], 1, MSG_CHARS)
    return out


def bounded(value: Any, depth: int = 0, chars: int = SHOWN_CHARS) -> Any:
    """`value` with each string cut to `chars`, each list and object to its first few items, and
    its nesting cut."""
    if isinstance(value, str):
        return cut(value, chars)
    if isinstance(value, list | tuple):
        if depth >= 3:
            return f"<a list of {len(value):,} items>"
        items = [bounded(v, depth + 1, chars) for v in value[:SHOWN_IDS]]
        return items + ([f"... {len(value):,} items"] if len(value) > SHOWN_IDS else [])
    if isinstance(value, dict):
        if depth >= 3:
            return f"<an object of {len(value):,} keys>"
        kept = list(value.items())[:SHOWN_IDS]
        out = {cut(str(k)): bounded(v, depth + 1, chars) for k, v in kept}
        return out | ({"...": f"{len(value):,} keys"} if len(value) > len(kept) else {})
    return value


def errors(**described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses: `errors(e404="unknown news")`; 422 is FastAPI's."""
    return {int(code[1:]): {"model": Message, "description": text} for code, text in described.items()}
