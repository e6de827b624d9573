"""A path whose "/" is sent escaped (%2F: a client that escapes a whole path, or a call id
and its action as one segment) matches no route, as aiohttp keeps the escape; its refusal
named the path decoded, a route that is there: "no route '/calls/outbound'"."""

from __future__ import annotations

from yarl import URL

from tests.conftest import AppFactory
from tests.helpers import SEED_TEST_BODY

NO_SEPARATOR = "(an escaped slash, %2F, is no path separator: write '/')"


async def test_an_escaped_slash_is_said_as_sent_not_as_the_route_it_is_not(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    resp = await client.post(URL("/calls%2Foutbound", encoded=True), json=SEED_TEST_BODY)
    assert resp.status == 404
    assert (await resp.json())["error"] == (
        f"no route '/calls%2Foutbound' {NO_SEPARATOR}; every route is listed at /openapi.json"
    )
    # Read as a call id with a slash in it: GET /calls/{call_id}, which takes no POST.
    resp = await client.post(URL("/calls/call-000000000000%2fhangup", encoded=True))
    assert resp.status == 405
    assert (await resp.json())["error"] == (
        f"POST is not allowed on '/calls/call-000000000000%2Fhangup' {NO_SEPARATOR};"
        " it takes GET, HEAD"
    )
    assert (await client.get("/calls")).status == 200  # (nothing placed)
    assert (await (await client.get("/calls")).json())["calls"] == []


async def test_other_escapes_are_said_decoded_as_before(start_app: AppFactory) -> None:
    client = await start_app()
    resp = await client.post(URL("/%6Futbound", encoded=True), json=SEED_TEST_BODY)
    assert resp.status == 404
    assert (await resp.json())["error"] == (
        "no route '/outbound'; every route is listed at /openapi.json"
    )
