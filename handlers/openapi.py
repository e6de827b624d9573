"""`GET /openapi.json`: the OpenAPI 3.1 document, generated from the routes as they are
declared (handlers/http.py `add_route`) and the pydantic models of their bodies, so a limit or
a pattern is written in one place: the model the handler validates with."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from handlers.http import (
    JSON,
    NO_TOKEN_REFUSED,
    Reply,
    RouteDoc,
    add_route,
    refuses_body,
    refuses_unknown_query,
)
from handlers.keys import ROUTES
from handlers.schemas import ErrorBody, OpenApiDocument

OPENAPI_PATH = "/openapi.json"
REF = "#/components/schemas/{model}"
HEADERS = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Idempotent-Replay": {
        "description": "1: the answer given to the first request under this Idempotency-Key",
        "schema": {"type": "string", "enum": ["1"]},
    },
    "Location": {
        "description": "The path of what was created",
        "schema": {"type": "string"},
    },
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _response(reply: Reply) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description}
    model = reply.model if reply.model is not None else ErrorBody
    if reply.content_type == JSON:
        schema: dict[str, Any] = _ref(model)
        if reply.or_model is not None:
            schema = {"oneOf": [schema, _ref(reply.or_model)]}
        answer["content"] = {JSON: {"schema": schema}}
    else:
        answer["content"] = {reply.content_type: {"schema": {"type": "string"}}}
    if reply.headers:
        answer["headers"] = {name: HEADERS[name] for name in reply.headers}
    return answer


# Answers any route may give, before or beside its own (errors_as_json, read_body).
UNREADABLE_TARGET = Reply("The path or query holds a NUL or bytes that are not UTF-8")
# An API route's, but for those that say their own (handlers/http.py `_only_query`).
UNKNOWN_QUERY = Reply(
    "A query parameter the route does not take, or a path or query holding a NUL or bytes"
    " that are not UTF-8"
)
# An API write that takes no body, for those that refuse one (handlers/http.py `_no_body`).
UNKNOWN_QUERY_OR_BODY = Reply(
    "A query parameter or a body (other than none, {} or null): the route takes neither; or a"
    " path or query holding a NUL or bytes that are not UTF-8"
)
BODY_TOO_SLOW = Reply("The body did not all arrive within 30 s of the headers")
BODY_ENCODING = Reply("The body's Content-Encoding is not gzip, deflate or none")
BODY_TRANSFER = Reply("The body's Transfer-Encoding is not chunked")
# Every route's (handlers/http.py `_expectation_met`), before anything else of it.
EXPECTATION_UNMET = Reply("An Expect header other than 100-continue: nothing was done")


def _has_body(doc: RouteDoc) -> bool:
    return doc.body is not None or doc.body_content_type != JSON


def _replies(doc: RouteDoc) -> dict[int, Reply]:
    unreadable = UNKNOWN_QUERY if refuses_unknown_query(doc) else UNREADABLE_TARGET
    if refuses_body(doc):
        unreadable = UNKNOWN_QUERY_OR_BODY
    replies = {400: unreadable, 417: EXPECTATION_UNMET, **doc.replies}
    # A route that takes no body still reads one sent to it, to refuse it (`_no_body`): its
    # reading fails as any route's would.
    if _has_body(doc) or refuses_body(doc):
        replies.setdefault(408, BODY_TOO_SLOW)
        replies.setdefault(415, BODY_ENCODING)
        replies.setdefault(501, BODY_TRANSFER)
    if doc.protected:
        replies.setdefault(403, NO_TOKEN_REFUSED)
    return dict(sorted(replies.items()))


def _operation(doc: RouteDoc) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": doc.summary,
        "operationId": doc.operation_id,
        "responses": {str(code): _response(reply) for code, reply in _replies(doc).items()},
    }
    if doc.protected:
        operation["security"] = [{}, {"bearerAuth": []}]
    if doc.parameters:
        operation["parameters"] = doc.parameters
    if _has_body(doc):
        schema: dict[str, Any] = _ref(doc.body) if doc.body is not None else {"type": "object"}
        if doc.batch_of:
            batch = {"type": "array", "items": schema, "minItems": 1, "maxItems": doc.batch_of}
            schema = {"oneOf": [schema, batch]}
        content = {doc.body_content_type: {"schema": schema}}
        content.update({kind: {"schema": other} for kind, other in doc.other_bodies.items()})
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _modes(routes: list[RouteDoc]) -> tuple[tuple[type[BaseModel], str], ...]:
    """The models of `routes`' bodies, in name order, each with the mode of its schema:
    requests are validated as input, answers are dumped as output (aliases, serialisation)."""
    models: set[type[BaseModel]] = {ErrorBody}
    for doc in routes:
        for reply in doc.replies.values():
            models.update(m for m in (reply.model, reply.or_model) if m is not None)
        if doc.body is not None:
            models.add(doc.body)
    ordered = sorted(models, key=lambda m: m.__name__)
    return tuple((m, "validation" if _is_request(m, routes) else "serialization") for m in ordered)


def build_spec(routes: list[RouteDoc]) -> dict[str, Any]:
    """The OpenAPI document of `routes` (as registered with add_route)."""
    paths: dict[str, dict[str, Any]] = {}
    for doc in routes:
        paths.setdefault(doc.path, {})[doc.method.lower()] = _operation(doc)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Outbound caller",
            "version": "0.2.0",
            "description": "Outbound voice-AI calls on LiveKit, each with its own configuration. "
            "Errors are JSON {status: error, error, details}.",
        },
        "paths": paths,
        "components": {
            "schemas": json.loads(_schemas_text(_modes(routes))),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on the API routes when CALLS_API_TOKEN is set",
                }
            },
        },
    }


@functools.cache
def _schemas_text(modes: tuple[tuple[type[BaseModel], str], ...]) -> str:
    """The models' JSON Schemas, as JSON text (each document gets its own copy). pydantic takes
    ~30 ms to make them, and every app one process makes has the same models: the test suite
    makes thousands."""
    _, schemas = models_json_schema(modes, ref_template=REF)  # type: ignore[arg-type]
    return json.dumps(schemas.get("$defs", {}))


def _is_request(model: type[BaseModel], routes: list[RouteDoc]) -> bool:
    return any(doc.body is model for doc in routes)


@dataclass
class Document:
    """An app's OpenAPI document, made when first asked for: made with every app, its schemas
    parsed into a document of its own and the whole encoded, it cost each app ~20 ms of
    start-up, and the test suite makes thousands of apps that never serve it."""

    routes: list[RouteDoc]
    _spec: dict[str, Any] | None = None
    _body: bytes | None = None

    def spec(self) -> dict[str, Any]:
        if self._spec is None:
            self._spec = build_spec(self.routes)
        return self._spec

    def body(self) -> bytes:
        """The document as answered, encoded once: it is 67 KB, the same for every request,
        and needs no token (a flood of requests re-encoding it cost the loop for nothing)."""
        if self._body is None:
            self._body = json.dumps(self.spec()).encode()
        return self._body


DOCUMENT = web.AppKey("openapi_document", Document)


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCUMENT].body(), content_type=JSON)


def setup(app: web.Application) -> None:
    """Register /openapi.json; call it after every other module's setup."""
    add_route(
        app,
        RouteDoc(
            "GET",
            OPENAPI_PATH,
            "openapi",
            "This document",
            replies={200: Reply("OpenAPI 3.1", OpenApiDocument)},
        ),
        openapi_document,
    )
    # The schemas made now (once per process), so that a model pydantic cannot describe
    # stops the start, not a request; the document itself when first asked for.
    _schemas_text(_modes(app[ROUTES]))
    app[DOCUMENT] = Document(app[ROUTES])
