"""The OpenAPI document at /openapi.json, and schemathesis driving the live app from it: every
operation, positive and negative data, checked for server errors and for answers that the
document does not describe (status codes, content types, headers, response bodies)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.requests import ManagedCookiesSession

from common.contracts import REPORTS_PATH
from handlers.keys import SETTINGS
from handlers.webhooks import other_spelling
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, wait_for
from tests.reliability.conftest import Figures, scaled
from tests.reliability.fuzz import fuzz_settings

Client = TestClient[Any, Any]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def session() -> Iterator[ManagedCookiesSession]:
    """The session schemathesis makes for each request when given none (redirects followed
    on the same host only, no cookie kept from one request to the next), made once for a
    test: one connection to the app kept open instead of one opened and closed per request,
    and no proxy looked up in the environment (every request read the whole of os.environ).
    A third of a request's CPU in this file went to those two (4 s of [open]'s 27 s)."""
    with ManagedCookiesSession() as made:
        made.trust_env = False
        yield made


def _operations(schema: BaseSchema) -> list[APIOperation[Any, Any, Any, Any]]:
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of the document loads
        operations.append(result.ok())
    return operations


async def _live_app(start_app: AppFactory) -> Client:
    client = await start_app(
        sandbox_time_scale=0.01,
        calls_rate_limit_per_min=1_000_000,
        calls_max_active=1_000_000,
    )
    return client


async def test_openapi_document_describes_every_route(start_app: AppFactory) -> None:
    client = await _live_app(start_app)
    resp = await client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    # The webhook's path with a trailing slash: the same operation, spelled as LiveKit may be told
    alias = other_spelling(client.app[SETTINGS].webhook_path)
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in client.app.router.routes()
        # "*": a 405 for every method a path does not take (/calls/outbound), no operation
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        and route.resource.canonical != alias
    }
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert documented == routes
    for path, ops in spec["paths"].items():
        for method, op in ops.items():  # a NUL or %FF in any path or query is a 400
            assert "400" in op["responses"], (method, path)
            # A body too slow: on a route that takes one, or refuses one it reads (an API write)
            reads_body = "requestBody" in op or (method != "get" and "security" in op)
            assert ("408" in op["responses"]) == reads_body, (method, path)
    schema = schemathesis.openapi.from_dict(spec)  # a document schemathesis can load
    assert len(_operations(schema)) == len(routes)


# [open] takes 22 s alone and took 87-90 s in suites at load average 6-9, once timing out at
# the suite's 120 s: its examples are many small requests, each waiting its turn on the CPU.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("token", [None, "openapi-test-token-0123456789"], ids=["open", "token"])
async def test_schemathesis_finds_no_server_error(
    start_app: AppFactory, token: str | None, figures: Figures, session: ManagedCookiesSession
) -> None:
    client = (
        await _live_app(start_app)
        if token is None
        else await start_app(calls_api_token=token, calls_rate_limit_per_min=1_000_000)
    )
    spec = await (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    base_url = str(client.make_url("")).rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    operations = _operations(schema)
    per_operation = scaled(40 if token is None else 10, minimum=5)
    per_outbound = scaled(150 if token is None else 10, minimum=5)  # the endpoint that matters
    # LiveKit's webhooks and the agents' reports: signed with a token no example holds, each
    # refused (401) before its body is read. 40 bodies each (up to 167 KB) cost 2.5 s of [open]
    # to make, and told nothing 10 do (the headers read before the token vary as much).
    signed = {client.app[SETTINGS].webhook_path, REPORTS_PATH}
    per_signed = min(per_operation, scaled(10, minimum=5))
    seen: dict[str, dict[int, int]] = {}

    def run(operation: APIOperation[Any, Any, Any, Any]) -> None:
        label = f"{operation.method.upper()} {operation.path}"
        statuses = seen.setdefault(label, {})
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @fuzz_settings(
            per_outbound
            if operation.path == "/calls/outbound"
            else per_signed
            if operation.path in signed
            else per_operation
        )
        @given(case=cases, authorized=st.booleans())
        def check(case: Case[Any], authorized: bool) -> None:
            response = case.call(
                base_url=base_url,
                session=session,
                headers=headers if authorized else None,
                timeout=30,
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=CHECKS)

        check()

    started = time.monotonic()
    for operation in operations:
        await asyncio.to_thread(run, operation)
    await client.app[SANDBOX].wait_idle(10)
    tried = sum(sum(s.values()) for s in seen.values())
    server_errors = sum(n for s in seen.values() for code, n in s.items() if code >= 500)
    assert server_errors == 0
    codes: dict[int, int] = {}
    for statuses in seen.values():
        for code, n in statuses.items():
            codes[code] = codes.get(code, 0) + n
    figures.add(
        f"{tried} requests over {len(operations)} operations "
        f"({', '.join(f'{n} x {c}' for c, n in sorted(codes.items()))}); 0 server errors, "
        f"0 non-conforming answers; {time.monotonic() - started:.1f} s"
    )


async def test_answers_random_data_rarely_reaches_conform(
    start_app: AppFactory, session: ManagedCookiesSession
) -> None:
    """Paths random data seldom takes (a number that is on the list, a call that exists),
    each answer validated against the document: DELETE /dnc/{number} answered a body the
    document did not describe."""
    # The call must still be live at the hang-up: answered, the callee talks 99 s (9.9 s here;
    # at _live_app's 0.01 a loaded machine reached the hang-up after the call had ended).
    client = await start_app(sandbox_time_scale=0.1)
    spec = await (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    base_url = str(client.make_url("")).rstrip("/")
    placed = await client.post("/calls/outbound", json={"phone_number": "+14155557799"})
    call_id = (await placed.json())["call_id"]
    assert (await client.post("/dnc", json={"numbers": ["+14155550100"]})).status == 200
    cases = [
        ("/dnc/{number}", "DELETE", {"number": "+14155550100"}, 200),
        ("/calls/{call_id}", "GET", {"call_id": call_id}, 200),
        ("/calls/{call_id}/deliveries", "GET", {"call_id": call_id}, 200),
        ("/calls/{call_id}/hangup", "POST", {"call_id": call_id}, 200),
    ]

    def run() -> None:
        for path, method, parameters, status in cases:
            case = schema[path][method].Case(path_parameters=parameters)
            response = case.call(base_url=base_url, session=session, timeout=30)
            assert response.status_code == status, (path, response.text)
            case.validate_response(response, checks=CHECKS)

    await asyncio.to_thread(run)
    await client.app[SANDBOX].wait_idle(10)


# Answers whose objects are free-form by design: a campaign's defaults are call fields.
FREE_FORM = {
    "defaults",
    "extracted",
    "details",
    "detail",
    "additional_params",
    "analysis",
    "data",
    "config",
}


def _undocumented(
    value: Any, schema: dict[str, Any], spec: dict[str, Any], at: str = ""
) -> list[str]:
    """The fields of an answer its schema does not name (the campaigns' answers were bare
    objects: nothing of them was described, nor checked, BS)."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"]
            if value is None or not options:
                return []
            found = [_undocumented(value, s, spec, at) for s in options]
            return min(found, key=len)
    if isinstance(value, list):
        items = schema.get("items", {})
        return [m for i, v in enumerate(value) for m in _undocumented(v, items, spec, f"{at}[{i}]")]
    if not isinstance(value, dict) or at.rsplit(".", 1)[-1] in FREE_FORM:
        return []
    properties = schema.get("properties", {})
    missing = [f"{at}.{k}" for k in value if k not in properties]
    return missing + [
        m
        for k, v in value.items()
        if k in properties
        for m in _undocumented(v, properties[k], spec, f"{at}.{k}")
    ]


# Each outcome the sandbox plays (README's test numbers), and a call hung up through the API.
OUTCOMES = {
    "busy": {"phone_number": "+14155550486"},
    "no_answer": {"phone_number": "+14155550480", "ringing_timeout_s": 5},
    "failed": {"phone_number": "+14155550503"},
    "voicemail": {
        "phone_number": "+14155550999",
        "voicemail": {"action": "leave_message", "message": "Call us back."},
    },
    "agent_died": {"phone_number": "+14155550666"},
    "no_agent": {"phone_number": "+14155550404"},
    "completed": {
        "phone_number": "+14155557701",
        "analysis": {
            "success_criteria": "They agree.",
            "fields": {"slot": {"type": "string"}, "next": {"type": "enum", "enum": ["a", "b"]}},
        },
    },
    "canceled": {"phone_number": "+14155557799"},
}


async def test_the_answers_of_every_outcome_conform(
    start_app: AppFactory, session: ManagedCookiesSession
) -> None:
    """A client written from the document reads real calls, not fuzzed ones: every outcome's
    call (its list, its deliveries, a hang-up once over), a campaign through its life and the
    do-not-call list, each answer checked against /openapi.json (status, content type,
    headers, body)."""
    # Its campaign dials +34: at a moment inside Madrid's calling hours, whatever the hour
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.01, campaign_clock=clock)
    spec = await (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    base_url = str(client.make_url("")).rstrip("/")

    def answer(
        path: str, method: str, status: int, body: Any = None, **parameters: Any
    ) -> dict[str, Any]:
        operation = schema[path][method]
        if body is None:
            case = operation.Case(path_parameters=parameters or None)
        else:
            case = operation.Case(body=body, media_type="application/json")
        response = case.call(base_url=base_url, session=session, timeout=30)
        assert response.status_code == status, (method, path, response.text)
        case.validate_response(response, checks=CHECKS)
        shown: dict[str, Any] = response.json()
        documented = operation.definition.raw["responses"][str(status)]
        body_schema = documented["content"]["application/json"]["schema"]
        assert _undocumented(shown, body_schema, spec) == [], (method, path)
        return shown

    def place_all() -> dict[str, str]:
        placed = {
            outcome: answer("/calls/outbound", "POST", 200, body)["call_id"]
            for outcome, body in OUTCOMES.items()
        }
        answer("/calls/{call_id}/hangup", "POST", 200, call_id=placed["canceled"])
        answer("/dnc", "POST", 200, {"numbers": ["+34612347702"]})
        campaign = answer(
            "/campaigns",
            "POST",
            201,
            {
                "name": "Contract",
                "recipients": [{"phone_number": "+34612347701"}, {"phone_number": "+34612347702"}],
                "window": {"start": "00:00", "end": "24:00"},
            },
        )
        placed["campaign"] = campaign["campaign_id"]
        # One waiting for its start, a row skipped: its control answers, its invalid rows.
        later = answer(
            "/campaigns",
            "POST",
            201,
            {
                "name": "Later",
                "recipients": [{"phone_number": "+34612347703"}, {"phone_number": "12"}],
                "invalid_rows": "skip",
                "start_at": time.strftime("%Y-%m-%dT09:00:00Z", time.gmtime(clock() + 9e6)),
            },
        )
        assert later["invalid_row_count"] == 1 and later["campaign"]["status"] == "scheduled"
        for action in ("pause", "resume", "cancel"):
            answer(
                f"/campaigns/{{campaign_id}}/{action}",
                "POST",
                200,
                campaign_id=later["campaign_id"],
            )
        answer("/campaigns/{campaign_id}/recipients", "GET", 200, campaign_id=later["campaign_id"])
        return placed

    placed = await asyncio.to_thread(place_all)
    await client.app[SANDBOX].wait_idle(20)

    async def campaign_over() -> bool:
        # The sandbox can be idle before the campaign's scheduler dialled its one recipient
        # (a loaded run): its cancel below is the 409 of a campaign over.
        resp = await client.get(f"/campaigns/{placed['campaign']}")
        status: str = (await resp.json())["campaign"]["status"]
        return status == "completed"

    await wait_for(campaign_over, timeout=20)
    await client.app[SANDBOX].wait_idle(20)

    def read_all() -> None:
        shown = {
            answer("/calls/{call_id}", "GET", 200, call_id=placed[o])["status"] for o in OUTCOMES
        }
        assert shown == {"busy", "no_answer", "failed", "voicemail", "completed", "canceled"}
        for outcome in OUTCOMES:
            answer("/calls/{call_id}/deliveries", "GET", 200, call_id=placed[outcome])
        answer("/calls/{call_id}/hangup", "POST", 409, call_id=placed["busy"])
        answer("/calls", "GET", 200)
        campaign_id = placed["campaign"]
        answer("/campaigns/{campaign_id}", "GET", 200, campaign_id=campaign_id)
        answer("/campaigns/{campaign_id}/recipients", "GET", 200, campaign_id=campaign_id)
        answer("/campaigns/{campaign_id}/deliveries", "GET", 200, campaign_id=campaign_id)
        answer("/campaigns/{campaign_id}/cancel", "POST", 409, campaign_id=campaign_id)
        answer("/campaigns", "GET", 200)
        answer("/dnc", "GET", 200)
        answer("/dnc/{number}", "DELETE", 200, number="+34612347702")
        answer("/dnc/{number}", "DELETE", 404, number="+34612347702")

    await asyncio.to_thread(read_all)
