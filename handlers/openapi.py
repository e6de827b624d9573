"""`GET /openapi.json`: the OpenAPI 3.1 document of the public API, built from the code's own
limits and catalogues so it cannot drift from what the handlers accept."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.call_config import (
    EMOTIONS,
    LANGUAGES,
    MAX_ADDITIONAL_PARAMS_BYTES,
    MAX_INSTRUCTIONS_CHARS,
    MAX_NAME_CHARS,
)
from common.call_request import MAX_DURATION_RANGE, RINGING_TIMEOUT_RANGE
from common.outcomes import Status
from common.settings import Settings
from handlers.calls import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, MAX_IDEMPOTENCY_KEY_CHARS
from handlers.context import SETTINGS

OPENAPI_PATH = "/openapi.json"
SPEC = web.AppKey("openapi_spec", dict[str, Any])

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    if headers:
        response["headers"] = headers
    return response


def _nullable(type_: str) -> dict[str, Any]:
    return {"type": [type_, "null"]}


_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}


def _nullable_time() -> dict[str, Any]:
    return {"type": ["string", "null"], "format": "date-time", "description": "ISO 8601, UTC"}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_UNAUTHORIZED = _error("CALLS_API_TOKEN is set and the request lacks `Bearer <token>`")
_DB_DOWN = _error("The calls database is unavailable")

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["status", "error", "details"],
        "properties": {
            "status": {"const": "error"},
            "error": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    },
    "OutboundCall": {
        "type": "object",
        "description": "The seed's request body, plus optional `additional_params`.",
        "required": ["phone_number"],
        "additionalProperties": False,
        "properties": {
            "phone_number": {
                "type": "string",
                "description": "E.164: '+' then 8 to 15 digits (spaces, dots, dashes and "
                "parentheses are ignored). Premium-rate and shared-cost numbers are refused.",
                "pattern": r"^\+[1-9][0-9]{7,14}$",
                "examples": ["+1234567890"],
            },
            "name": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_NAME_CHARS,
                "description": "How the agent addresses the callee; default Guest",
            },
            "dynamic_instruction": {
                "type": ["string", "null"],
                "maxLength": MAX_INSTRUCTIONS_CHARS,
                "description": "The agent's instructions for this call",
            },
            "language": {
                "type": ["string", "null"],
                "enum": [*sorted(LANGUAGES), None],
                "description": "TTS/STT language (ISO 639-1, case-insensitive); default en",
            },
            "emotion": {
                "type": ["string", "null"],
                "enum": [*EMOTIONS, None],
                "description": "TTS emotion (case-insensitive); default Calm",
            },
            "ringing_timeout_s": {
                "type": ["integer", "null"],
                "minimum": RINGING_TIMEOUT_RANGE[0],
                "maximum": RINGING_TIMEOUT_RANGE[1],
                "description": "How long the phone rings; default CALL_RINGING_TIMEOUT_S",
            },
            "max_duration_s": {
                "type": ["integer", "null"],
                "minimum": MAX_DURATION_RANGE[0],
                "maximum": MAX_DURATION_RANGE[1],
                "description": "The longest the call may last; default CALL_MAX_DURATION_S",
            },
            "additional_params": {
                "type": ["object", "null"],
                "description": f"Extra context for the agent, at most {MAX_ADDITIONAL_PARAMS_BYTES}"
                " bytes as JSON; may not use the reserved keys caller_name, agent_instructions,"
                " tts_language, tts_emotion, last_updated, written_at, call_id, calls,"
                " additional_params",
            },
        },
    },
    "CallPlaced": {
        "type": "object",
        "required": ["status", "call_id", "room", "call_status"],
        "properties": {
            "status": {"const": "success"},
            "call_id": {"type": "string"},
            "room": {"type": "string"},
            "call_status": {"enum": [s.value for s in Status]},
        },
    },
    "CallSummary": {
        "type": "object",
        "required": [
            "call_id",
            "room",
            "phone_number",
            "name",
            "language",
            "emotion",
            "status",
            "outcome",
            "reason",
            "created_at",
            "answered_at",
            "ended_at",
            "updated_at",
            "ring_s",
            "talk_s",
            "ringing_timeout_s",
            "max_duration_s",
        ],
        "properties": {
            "call_id": {"type": "string"},
            "room": {"type": "string"},
            "phone_number": {"type": "string"},
            "name": {"type": "string"},
            "language": {"type": "string"},
            "emotion": {"type": "string"},
            "status": {"enum": [s.value for s in Status]},
            "outcome": _nullable("string"),
            "reason": _nullable("string"),
            "created_at": _TIME,
            "answered_at": _nullable_time(),
            "ended_at": _nullable_time(),
            "updated_at": _TIME,
            "ring_s": _nullable("number"),
            "talk_s": _nullable("number"),
            "ringing_timeout_s": _nullable("integer"),
            "max_duration_s": _nullable("integer"),
        },
    },
    "Call": {
        "allOf": [
            _ref("CallSummary"),
            {
                "type": "object",
                "required": ["config", "timeline"],
                "properties": {
                    "config": {
                        "type": ["object", "null"],
                        "description": "The configuration the call was placed with",
                    },
                    "timeline": {"type": "array", "items": _ref("TimelineEntry")},
                },
            },
        ]
    },
    "TimelineEntry": {
        "type": "object",
        "required": ["event", "from", "to", "at", "event_id", "detail"],
        "properties": {
            "event": {"type": "string"},
            "from": _nullable("string"),
            "to": _nullable("string"),
            "at": _TIME,
            "event_id": _nullable("string"),
            "detail": {"type": "object"},
        },
    },
    "CallList": {
        "type": "object",
        "required": ["calls", "next_before"],
        "properties": {
            "calls": {"type": "array", "items": _ref("CallSummary")},
            "next_before": _nullable("number"),
        },
    },
    "HangupAnswer": {
        "type": "object",
        "required": ["status", "call_id", "call_status"],
        "properties": {
            "status": {"const": "success"},
            "call_id": {"type": "string"},
            "call_status": {"enum": [s.value for s in Status]},
        },
    },
    "Ok": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "WebhookAnswer": {
        "type": "object",
        "required": ["status", "result"],
        "properties": {
            "status": {"const": "success"},
            "result": {"enum": ["applied", "duplicate", "ignored"]},
        },
    },
}

_CALL_ID = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The call id answered by POST /calls/outbound (also the LiveKit room)",
}
_CALLS_SECURITY: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]


def _paths(webhook_path: str) -> dict[str, Any]:
    return {
        "/calls/outbound": {
            "post": {
                "summary": "Place an outbound call with its own configuration",
                "operationId": "placeCall",
                "security": _CALLS_SECURITY,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": (
                            "Repeats of the same body with the same key get the first answer; "
                            "another body with a used key gets 409"
                        ),
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
                        },
                    }
                ],
                "requestBody": {"required": True, "content": _json(_ref("OutboundCall"))},
                "responses": {
                    "200": {
                        "description": "The call is dialing",
                        "content": _json(_ref("CallPlaced")),
                    },
                    "400": _error("The body is not JSON, or a bad Idempotency-Key"),
                    "401": _UNAUTHORIZED,
                    "409": _error("The Idempotency-Key was already used with another body"),
                    "413": _error("The body is larger than 64 KiB"),
                    "422": _error("The body is invalid; `details` lists every field's problem"),
                    "429": _error("Rate limit or live-call cap reached", _RETRY_AFTER),
                    "502": _error("LiveKit refused the call (the call is recorded as failed)"),
                    "503": _error("Config store, calls database or LiveKit unavailable"),
                    "504": _error(
                        "LiveKit did not answer in time (the call is recorded as failed)"
                    ),
                },
            }
        },
        "/calls": {
            "get": {
                "summary": "Recent calls, newest first",
                "operationId": "listCalls",
                "security": _CALLS_SECURITY,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": [s.value for s in Status]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": LIST_LIMIT_MAX,
                            "default": LIST_LIMIT_DEFAULT,
                        },
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "required": False,
                        "description": "Only calls created before this unix time (next_before)",
                        "schema": {"type": "number"},
                    },
                ],
                "responses": {
                    "200": {"description": "Calls", "content": _json(_ref("CallList"))},
                    "400": _error("A bad query parameter"),
                    "401": _UNAUTHORIZED,
                    "503": _DB_DOWN,
                },
            }
        },
        "/calls/{call_id}": {
            "get": {
                "summary": "One call: status, outcome, timings and event timeline",
                "operationId": "getCall",
                "security": _CALLS_SECURITY,
                "parameters": [_CALL_ID],
                "responses": {
                    "200": {"description": "The call", "content": _json(_ref("Call"))},
                    "401": _UNAUTHORIZED,
                    "404": _error("No such call"),
                    "503": _DB_DOWN,
                },
            }
        },
        "/calls/{call_id}/hangup": {
            "post": {
                "summary": "End a live call; it settles as canceled",
                "operationId": "hangupCall",
                "security": _CALLS_SECURITY,
                "parameters": [_CALL_ID],
                "responses": {
                    "200": {"description": "Hanging up", "content": _json(_ref("HangupAnswer"))},
                    "401": _UNAUTHORIZED,
                    "404": _error("No such call"),
                    "409": _error("The call has already ended"),
                    "502": _error("LiveKit refused to end the call"),
                    "503": _error("Calls database or LiveKit unavailable"),
                    "504": _error("LiveKit did not answer in time"),
                },
            }
        },
        webhook_path: {
            "post": {
                "summary": "LiveKit's signed webhooks (Authorization: a JWT over the body)",
                "operationId": "livekitWebhook",
                "requestBody": {
                    "required": True,
                    "content": {"application/webhook+json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {"description": "Accepted", "content": _json(_ref("WebhookAnswer"))},
                    "400": _error("Signed, but not a LiveKit event"),
                    "401": _error("The signature did not verify; nothing changed"),
                    "413": _error("The body is larger than 1 MiB"),
                    "503": _error("The calls database is unavailable; LiveKit retries"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {"200": {"description": "Alive", "content": _json(_ref("Ok"))}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the database answers and LiveKit accepts our key",
                "operationId": "readyz",
                "responses": {
                    "200": {"description": "Ready", "content": _json(_ref("Ok"))},
                    "503": _error("Not ready; `details` names the failing components"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}
                },
            }
        },
    }


def build_spec(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document for an app running with `settings`."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Outbound caller",
            "version": "0.1.0",
            "description": "Outbound voice-AI calls on LiveKit, each with its own configuration. "
            "Errors are JSON {status: error, error, details}.",
        },
        "paths": _paths(settings.webhook_path),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on /calls when CALLS_API_TOKEN is set",
                }
            },
        },
    }


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[SPEC])


def setup(app: web.Application) -> None:
    app[SPEC] = build_spec(app[SETTINGS])
    app.router.add_get(OPENAPI_PATH, openapi_document)
