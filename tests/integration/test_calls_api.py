"""POST /calls/outbound and friends through the real app, the real livekit-api client and the
embedded sandbox speaking LiveKit's Twirp protocol."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from agent.config_source import select_config
from common.calls.models import IdempotencyClaim, NewCall
from common.config_store import store as config_store_module
from common.contracts import DispatchMetadata
from common.update_config import load_dynamic_config
from handlers.keys import CALLS, CONFIG, SETTINGS
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, hold_config_write, hold_requests

Client = TestClient[Any, Any]


def sandbox_requests(client: Client, method: str) -> list[dict[str, Any]]:
    return [r.body for r in client.app[SANDBOX].requests if r.method == method and r.authorized]


def config_calls(path: Path) -> dict[str, Any]:
    calls: dict[str, Any] = json.loads(path.read_text())["calls"]
    return calls


@pytest.mark.parametrize("body", SEED_EXAMPLES, ids=["cricket", "spanish", "requests"])
async def test_seed_examples_place_calls(
    client: Client, body: dict[str, str], tmp_path: Path
) -> None:
    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 200
    answer = await resp.json()
    assert answer["status"] == "success"
    call_id = answer["call_id"]
    assert answer["room"] == call_id and call_id.startswith("call-")

    record = config_calls(tmp_path / "config.json")[call_id]
    assert record["caller_name"] == body["name"]
    assert record["agent_instructions"] == body["dynamic_instruction"]
    assert (record["tts_language"], record["tts_emotion"]) == (body["language"], body["emotion"])

    (dispatch,) = sandbox_requests(client, "CreateDispatch")
    assert dispatch["agent_name"] == "outbound-caller" and dispatch["room"] == call_id
    metadata = json.loads(dispatch["metadata"])
    assert metadata["call_id"] == call_id
    assert metadata["config"]["caller_name"] == body["name"]
    assert dispatch.get("restart_policy") == "JRP_NEVER"
    (dial,) = sandbox_requests(client, "CreateSIPParticipant")
    assert dial["sip_call_to"] == body["phone_number"] and dial["room_name"] == call_id

    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["name"] == body["name"] and shown["phone_number"] == body["phone_number"]
    assert shown["status"] in ("dialing", "ringing", "in_progress")
    events = [e["event"] for e in shown["timeline"]]
    assert events[0] == "created" and "dialed" in events  # webhooks may come in between


async def test_seed_integration_body_without_instruction(client: Client) -> None:
    resp = await client.post(
        "/calls/outbound",
        json={
            "phone_number": "+1234567890",
            "name": "Test User",
            "language": "en",
            "emotion": "Calm",
        },
    )
    assert resp.status == 200
    # The seed's check: the module-level API sees the latest call's config.
    config = load_dynamic_config()
    assert config["caller_name"] == "Test User"
    assert config["agent_instructions"] == "You are a helpful assistant."


@pytest.mark.parametrize("blank", ["", " \n\t "])
async def test_blank_instructions_give_the_agent_the_default_ones(
    client: Client, tmp_path: Path, blank: str
) -> None:
    """The agent's record, its dispatch snapshot and GET /calls/{id} agree: an empty
    instruction is the default one, not an agent with no instructions at all."""
    body = {"phone_number": "+1234567890", "dynamic_instruction": blank}
    call_id = (await (await client.post("/calls/outbound", json=body)).json())["call_id"]
    record = config_calls(tmp_path / "config.json")[call_id]
    (dispatch,) = sandbox_requests(client, "CreateDispatch")
    shown = await (await client.get(f"/calls/{call_id}")).json()
    default = "You are a helpful assistant."
    assert record["agent_instructions"] == default
    assert json.loads(dispatch["metadata"])["config"]["agent_instructions"] == default
    assert shown["config"]["agent_instructions"] == default


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "No Phone"}, ["phone_number"]),
        ({"phone_number": "12345"}, ["phone_number"]),
        ({"phone_number": "+1234567890", "language": "xx"}, ["language"]),
        ({"phone_number": "+1234567890", "emotion": "Furious"}, ["emotion"]),
        ({"phone_number": "+1234567890", "name": ""}, ["name"]),
        (
            {"phone_number": "+1234567890", "dynamic_instruction": "x" * 4001},
            ["dynamic_instruction"],
        ),
        ({"phone_number": "+1234567890", "additional_params": {"calls": 1}}, ["additional_params"]),
        ({"phone_number": "+1234567890", "surprise": 1}, ["surprise"]),
        ({"phone_number": 1234567890, "language": "zz"}, ["phone_number", "language"]),
    ],
)
async def test_validation_errors_write_nothing(
    client: Client, body: dict[str, Any], fields: list[str], tmp_path: Path
) -> None:
    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 422
    answer = await resp.json()
    assert answer["status"] == "error"
    assert sorted(d["field"] for d in answer["details"]) == sorted(fields)
    assert not (tmp_path / "config.json").exists()
    assert list(client.app[SANDBOX].requests) == []
    assert (await (await client.get("/calls")).json())["calls"] == []


async def test_language_error_lists_allowed_values(client: Client) -> None:
    resp = await client.post(
        "/calls/outbound", json={"phone_number": "+1234567890", "language": "xx"}
    )
    (detail,) = (await resp.json())["details"]
    assert "allowed" in detail["error"] and "es" in detail["error"]


async def test_body_too_large_and_bad_json(client: Client) -> None:
    big = json.dumps({"phone_number": "+1234567890", "name": "x" * (65 * 1024)})
    resp = await client.post(
        "/calls/outbound", data=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    resp = await client.post(
        "/calls/outbound", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["status"] == "error"


async def test_token_required_when_configured(start_app: AppFactory, tmp_path: Path) -> None:
    client = await start_app(calls_api_token="s3cret-token")
    body = SEED_EXAMPLES[0]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        resp = await client.post("/calls/outbound", json=body, headers=headers)
        assert resp.status == 401
        assert (await resp.json())["error"] == "missing or invalid API token"
    # The token twice, or beside another: 401 whichever comes first (the first was taken,
    # and a wrong one after the right one passed).
    for pair in (
        ("Bearer s3cret-token", "Bearer wrong"),
        ("Bearer wrong", "Bearer s3cret-token"),
        ("Bearer s3cret-token", "Bearer s3cret-token"),
    ):
        twice = CIMultiDict([("Authorization", value) for value in pair])
        resp = await client.post("/calls/outbound", json=body, headers=twice)
        assert resp.status == 401, pair
        assert (await resp.json())["error"] == "Authorization given more than once: send one"
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="calls"'
    # 401 comes before anything about the body is looked at.
    resp = await client.post("/calls/outbound", data=b"{nope")
    assert resp.status == 401
    assert (await client.get("/calls")).status == 401
    assert not (tmp_path / "config.json").exists()
    resp = await client.post(
        "/calls/outbound", json=body, headers={"Authorization": "Bearer s3cret-token"}
    )
    assert resp.status == 200
    assert (await client.get("/healthz")).status == 200  # operations need no token


async def test_a_token_being_rotated_takes_the_new_and_the_old_one(
    start_app: AppFactory,
) -> None:
    """One token could not be rotated: a new one locked out every client until each had it.
    CALLS_API_TOKEN_PREVIOUS keeps the old one taken meanwhile; any other is still 401."""
    client = await start_app(
        calls_api_token="new-token-0123456789", calls_api_token_previous="old-token-0123456789"
    )
    for token, status in (
        ("new-token-0123456789", 200),
        ("old-token-0123456789", 200),
        ("other-token-0123456789", 401),
        ("old-token-0123456789x", 401),
    ):
        resp = await client.get("/calls", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == status, token
    resp = await client.get("/calls")
    assert resp.status == 401


async def test_rate_limit_429_with_retry_after(start_app: AppFactory, tmp_path: Path) -> None:
    client = await start_app(calls_rate_limit_per_min=2)
    for _ in range(2):
        assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 200
    resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[1])
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert len(config_calls(tmp_path / "config.json")) == 2  # nothing written for the third
    assert len(sandbox_requests(client, "CreateSIPParticipant")) == 2


async def test_live_call_cap_429(start_app: AppFactory) -> None:
    client = await start_app(calls_max_active=1, sandbox_time_scale=100.0)
    assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 200
    resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[1])
    assert resp.status == 429 and "Retry-After" in resp.headers
    assert "live calls" in (await resp.json())["error"]


async def test_calls_refused_at_once_leave_the_latest_config_to_the_placed_one(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten at once with room for one: those refused in the call's transaction (after their
    config write) left the seed's flat document naming one of them, a caller nobody called
    (3 runs of 3 in a probe)."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app(calls_max_active=1, sandbox_time_scale=100.0)
    answers = await asyncio.gather(
        *(
            client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name=f"Racer{n}"))
            for n in range(10)
        )
    )
    placed = [n for n, resp in enumerate(answers) if resp.status == 200]
    assert len(placed) == 1 and {r.status for r in answers} == {200, 429}
    doc = json.loads((tmp_path / "config.json").read_bytes())
    assert doc["caller_name"] == f"Racer{placed[0]}"
    assert [r["caller_name"] for r in doc["calls"].values()] == [f"Racer{placed[0]}"]
    assert client.app[CONFIG]._tops_before == {}  # placed or refused, nothing kept for them
    # Each retraction's line says why its call was refused (probe AO: it said only that).
    taken_back = [r.getMessage() for r in caplog.records if "write taken back" in r.getMessage()]
    assert taken_back and all("live calls" in line for line in taken_back), taken_back


async def test_a_busy_dial_keeps_its_key_and_a_retry_dials_nobody_again(
    start_app: AppFactory,
) -> None:
    """SIP 486 Busy: the callee's line was reached. Its Idempotency-Key was freed as if
    LiveKit had refused before dialling, and the client's retry rang the busy person again
    (review AH). It keeps the key: the retry gets the first answer. A refusal before any
    dial (503) still frees it: the retry places the call."""
    client = await start_app(sandbox_time_scale=0.0)
    sandbox = client.app[SANDBOX]
    busy = {"sip_status_code": "486", "sip_status": "Busy Here"}
    sandbox.inject(
        "CreateSIPParticipant",
        error=TwirpError("resource_exhausted", "sip status 486: Busy Here", busy),
        times=1,
    )
    headers = {"Idempotency-Key": "order-busy"}
    first = await client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers)
    assert first.status == 502
    # Its receiver is told of the call (it may have rung): so is its client, by its id.
    listed = (await (await client.get("/calls?limit=1")).json())["calls"][0]
    assert (await first.json())["call_id"] == listed["call_id"]
    again = await client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers)
    assert again.status == 502 and again.headers["Idempotent-Replay"] == "1"
    assert await again.read() == await first.read()
    assert [r.method for r in sandbox.requests].count("CreateSIPParticipant") == 1
    sandbox.inject("CreateSIPParticipant", error=TwirpError("unavailable", "restarting"), times=1)
    headers = {"Idempotency-Key": "order-refused"}
    refused = await client.post("/calls/outbound", json=SEED_EXAMPLES[1], headers=headers)
    assert refused.status == 503 and "call_id" not in await refused.json()  # nobody called
    placed = await client.post("/calls/outbound", json=SEED_EXAMPLES[1], headers=headers)
    assert placed.status == 200 and "Idempotent-Replay" not in placed.headers


@pytest.mark.parametrize(
    ("code", "words", "status", "level"),
    [
        ("486", "Busy Here", "busy", logging.INFO),
        ("480", "Temporarily Unavailable", "no_answer", logging.INFO),
        ("403", "Forbidden", "failed", logging.ERROR),
        ("503", "Service Unavailable", "failed", logging.ERROR),
        # A number that does not exist: the client's data, no operator can fix it.
        ("404", "Not Found", "failed", logging.WARNING),
        ("484", "Address Incomplete", "failed", logging.WARNING),
        ("604", "Does Not Exist Anywhere", "failed", logging.WARNING),
    ],
)
async def test_a_dial_refused_with_a_sip_status_ends_as_that_status_maps(
    start_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    code: str,
    words: str,
    status: str,
    level: int,
) -> None:
    """CreateSIPParticipant answered with a SIP status: the call ends as README's mapping of
    SIP statuses says (486 busy, 480 no answer, others failed), with the status as its
    reason. Every one of them read `failed`: a busy line too, so a campaign retrying
    `busy` never called it again, and one retrying `failed` did at its failure's pace.
    A busy or unanswered line is an outcome, logged at INFO; it was an ERROR "could not be
    placed", paging the operator for every busy callee."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app(sandbox_time_scale=0.0)
    meta = {"sip_status_code": code, "sip_status": words}
    client.app[SANDBOX].inject(
        "CreateSIPParticipant",
        error=TwirpError("resource_exhausted", f"sip status {code}: {words}", meta),
        times=1,
    )
    placed = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
    assert placed.status == 502
    call = await (await client.get(f"/calls/{(await placed.json())['call_id']}")).json()
    assert (call["status"], call["reason"]) == (status, f"SIP dial: SIP {code} {words}")
    said = [
        r for r in caplog.records if call["call_id"] in r.getMessage() and words in r.getMessage()
    ]
    assert max(r.levelno for r in said) == level, [r.getMessage() for r in said]
    # Its status line says it in any case (INFO).
    assert any(r.levelno == logging.INFO and f"-> {status}" in r.getMessage() for r in said)


async def test_another_kind_of_placement_failure_is_said_at_once(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """One call's dial refused by the carrier (SIP 503), then LiveKit refusing our key (401)
    on every call: the 401 is an ERROR of its own at once. Both are LiveKit refusals and
    shared one once-a-minute slot: the key's failure was held back up to a minute, then
    said as one of "N more like it" the carrier's 503."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app(sandbox_time_scale=0.0)
    sandbox = client.app[SANDBOX]
    meta = {"sip_status_code": "503", "sip_status": "Service Unavailable"}
    sandbox.inject(
        "CreateSIPParticipant",
        error=TwirpError("unavailable", "sip status 503: Service Unavailable", meta),
        times=1,
    )
    assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 502
    sandbox.inject(
        "CreateDispatch", error=TwirpError("unauthenticated", "invalid authorization token")
    )
    for _ in range(3):
        assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 502
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert "SIP 503" in errors[0] and "LiveKit answered 401" in errors[1], errors
    assert "more like it" not in errors[1], errors


async def test_idempotency_key_returns_first_answer(client: Client) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first, second = await asyncio.gather(
        client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers),
        client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers),
    )
    third = await client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers)
    # One of the two at once places the call; the other gets its answer, or, coming while
    # it is placed, 409 (retry shortly). After them, the first answer.
    assert sorted([first.status, second.status])[0] == 200 and {first.status, second.status} <= {
        200,
        409,
    }
    answers = [await r.json() for r in (first, second, third) if r.status == 200]
    assert third.status == 200
    assert len({a["call_id"] for a in answers}) == 1
    assert len(sandbox_requests(client, "CreateSIPParticipant")) == 1
    other = await client.post(
        "/calls/outbound", json=SEED_EXAMPLES[0], headers={"Idempotency-Key": "order-43"}
    )
    assert (await other.json())["call_id"] != answers[0]["call_id"]


async def test_campaigns_keys_are_not_a_clients_to_take(client: Client) -> None:
    """A campaign places each attempt under the key `campaign:<id>:<row>:<attempt>` for the
    client that created it; that client taking the key first made the attempt fail as
    "changed since placed", its recipient `invalid` with nobody called."""
    for key in ("campaign:cmp-07eb9a434705:0:1", "campaign:"):
        resp = await client.post(
            "/calls/outbound", json=SEED_EXAMPLES[0], headers={"Idempotency-Key": key}
        )
        assert resp.status == 400
        assert "may not start with 'campaign:'" in (await resp.json())["error"]
    assert sandbox_requests(client, "CreateSIPParticipant") == []
    ok = await client.post(
        "/calls/outbound", json=SEED_EXAMPLES[0], headers={"Idempotency-Key": "my-campaign:1"}
    )
    assert ok.status == 200


async def test_idempotency_key_reused_with_another_body_is_409(client: Client) -> None:
    headers = {"Idempotency-Key": "order-77"}
    first, clash = await asyncio.gather(
        client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers),
        client.post("/calls/outbound", json=SEED_EXAMPLES[1], headers=headers),
    )
    later = await client.post("/calls/outbound", json=SEED_EXAMPLES[2], headers=headers)
    assert first.status == 200
    for resp in (clash, later):
        assert resp.status == 409
        assert "different request body" in (await resp.json())["error"]
    assert len(sandbox_requests(client, "CreateSIPParticipant")) == 1  # only the first rang


async def test_idempotency_key_covers_the_document_not_its_spelling(client: Client) -> None:
    """A retry may serialise the same body anew: keys in another order, other spacing, other
    escapes. That is the same request, answered again; a body with one value changed is
    another (409)."""
    body = SEED_EXAMPLES[1]  # "Carlos García": escaped or not
    spellings = [
        json.dumps(body),
        json.dumps(dict(reversed(list(body.items()))), ensure_ascii=False, indent=2),
        "\ufeff" + json.dumps(body, separators=(",", ":"), ensure_ascii=False),
    ]
    headers = {"Idempotency-Key": "order-88", "Content-Type": "application/json"}
    answers = []
    for text in spellings:
        resp = await client.post("/calls/outbound", data=text.encode(), headers=headers)
        assert resp.status == 200, await resp.text()
        answers.append(((await resp.json())["call_id"], resp.headers.get("Idempotent-Replay")))
    assert len({call_id for call_id, _ in answers}) == 1
    assert [replay for _, replay in answers] == [None, "1", "1"]
    changed = {**body, "name": "Carlos Garcia"}
    clash = await client.post("/calls/outbound", json=changed, headers=headers)
    assert clash.status == 409
    assert len(sandbox_requests(client, "CreateSIPParticipant")) == 1


async def test_a_replayed_200_is_the_first_answer_byte_for_byte(client: Client) -> None:
    """A retry under the key gets the very bytes and content type of the first 200 (a client
    comparing or hashing answers sees one answer), marked `Idempotent-Replay: 1`."""
    headers = {"Idempotency-Key": "order-77"}
    first = await client.post("/calls/outbound", json=SEED_EXAMPLES[1], headers=headers)
    again = await client.post("/calls/outbound", json=SEED_EXAMPLES[1], headers=headers)
    assert (first.status, again.status) == (200, 200)
    assert await again.read() == await first.read()
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert (first.headers.get("Idempotent-Replay"), again.headers.get("Idempotent-Replay")) == (
        None,
        "1",
    )


async def test_a_key_bound_by_its_bytes_still_matches_those_bytes(client: Client) -> None:
    """Keys bound before the hash covered the document hold the hash of the body's bytes: a
    retry of those very bytes after an upgrade is still the same request, not a 409."""
    raw = json.dumps(SEED_EXAMPLES[0]).encode()
    legacy = IdempotencyClaim(
        "127.0.0.1", hashlib.sha256(b"order-99").hexdigest(), hashlib.sha256(raw).hexdigest()
    )
    store = client.app[CALLS].store
    await store.create_call(
        NewCall("call-00000000old1", "+1234567890", "A", "en", "Calm"), claim=legacy
    )
    await store.start_dial("call-00000000old1")  # dialled (undialled, it is still being placed)
    headers = {"Idempotency-Key": "order-99", "Content-Type": "application/json"}
    resp = await client.post("/calls/outbound", data=raw, headers=headers)
    assert resp.status == 200 and resp.headers.get("Idempotent-Replay") == "1"
    assert (await resp.json())["call_id"] == "call-00000000old1"
    assert sandbox_requests(client, "CreateSIPParticipant") == []
    other = json.dumps(SEED_EXAMPLES[1]).encode()
    assert (await client.post("/calls/outbound", data=other, headers=headers)).status == 409


async def test_livekit_down_502_or_503_and_failed_row(client: Client, tmp_path: Path) -> None:
    await client.app[SANDBOX].stop()
    resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
    assert resp.status in (502, 503)
    answer = await resp.json()
    assert answer["status"] == "error" and "LiveKit" in answer["error"]
    (call,) = (await (await client.get("/calls")).json())["calls"]
    assert call["status"] == "failed" and call["reason"]
    assert config_calls(tmp_path / "config.json") == {}  # no config record left behind
    assert (await client.get("/readyz")).status == 503


async def test_fifty_concurrent_calls_each_with_its_own_config(
    start_app: AppFactory, tmp_path: Path
) -> None:
    client = await start_app(sandbox_time_scale=100.0)  # calls stay live while we look
    bodies = [dict(SEED_EXAMPLES[i % 3], name=f"Caller {i:02d}") for i in range(50)]
    responses = await asyncio.gather(*(client.post("/calls/outbound", json=b) for b in bodies))
    answers = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * 50
    ids = {a["call_id"]: b["name"] for a, b in zip(answers, bodies, strict=True)}
    assert len(ids) == 50
    records = config_calls(tmp_path / "config.json")
    assert {cid: records[cid]["caller_name"] for cid in ids} == ids
    dispatches = sandbox_requests(client, "CreateDispatch")
    assert len(dispatches) == 50
    now = time.time()  # every room was created by now
    for dispatch in dispatches:
        metadata = DispatchMetadata.parse(dispatch["metadata"])
        assert metadata.config is not None
        assert metadata.config["caller_name"] == ids[dispatch["room"]]
        # The agent takes the record: the server's record and snapshot say the same.
        chosen = select_config(dispatch["room"], records[dispatch["room"]], metadata.config, now)
        assert (chosen.source, chosen.config.caller_name) == ("config.json", ids[dispatch["room"]])
    listed = (await (await client.get("/calls?limit=500")).json())["calls"]
    assert len(listed) == 50


async def test_get_and_list_calls(client: Client) -> None:
    assert (await client.get("/calls/call-000000000000")).status == 404
    ids = []
    for body in SEED_EXAMPLES:
        ids.append((await (await client.post("/calls/outbound", json=body)).json())["call_id"])
    listed = await (await client.get("/calls?limit=2")).json()
    assert [c["call_id"] for c in listed["calls"]] == ids[::-1][:2]  # newest first
    older = await (await client.get(f"/calls?limit=2&before={listed['next_before']}")).json()
    assert [c["call_id"] for c in older["calls"]] == [ids[0]]
    assert older["next_before"] is None  # the last page
    assert listed["next_before"].endswith(f":{ids[1]}")  # <created_at>:<its call id>
    # A last page exactly full says it is the last (it gave a cursor to an empty page).
    everything = await (await client.get("/calls?limit=3")).json()
    assert len(everything["calls"]) == 3 and everything["next_before"] is None
    assert (await client.get("/calls?limit=501")).status == 400
    assert (await client.get("/calls?status=bogus")).status == 400
    everything_older = await (await client.get("/calls?before=4102444800")).json()  # 2100
    assert len(everything_older["calls"]) == len(ids)  # a plain unix time still works
    for bad in ("1_000", "%201000", "-1", "1e9", "nan", "1000:call%20x", "1000:"):
        resp = await client.get(f"/calls?before={bad}")
        assert resp.status == 400, bad
        assert "before must be a next_before token or a unix time" in (await resp.json())["error"]
    dialing = await (await client.get("/calls?status=dialing")).json()
    assert all(c["status"] == "dialing" for c in dialing["calls"])


async def test_operations_endpoints(client: Client) -> None:
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status == 200
    await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
    text = await (await client.get("/metrics")).text()
    assert 'http_requests_total{code="200",method="POST",route="/calls/outbound"} 1.0' in text
    assert "config_write_seconds_count 1.0" in text
    assert "calls{status=" in text
    assert "sandbox-secret" not in text


async def test_an_empty_or_form_body_is_told_to_send_json(client: Client) -> None:
    """An empty body, or a form (`requests.post(url, data={...})`, `curl -d
    phone_number=...`), got "request body is not valid JSON: Expecting value: line 1 column 1
    (char 0)" on /calls/outbound and /dnc, naming neither what came nor what to send (probe
    BB). JSON sent with a form's Content-Type (curl's `-d` alone) is still read."""
    form = "application/x-www-form-urlencoded"
    for path in ("/calls/outbound", "/dnc"):
        resp = await client.post(path)
        assert resp.status == 400
        assert (await resp.json())["error"] == (
            "request body is empty: send a JSON object (Content-Type: application/json)"
        )
        resp = await client.post(path, data={"phone_number": "+14155550123"})
        assert resp.status == 400
        assert (await resp.json())["error"] == (
            "request body is not valid JSON: Expecting value: line 1 column 1 (char 0) (it was"
            f" sent as a form, {form}: send a JSON object, with Content-Type: application/json)"
        )
    resp = await client.post(
        "/calls/outbound", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert (await resp.json())["error"] == (
        "request body is not valid JSON: Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1)"
    )
    body = json.dumps({"phone_number": "+14155550123"})
    resp = await client.post("/calls/outbound", data=body, headers={"Content-Type": form})
    assert resp.status == 200, await resp.text()


async def test_a_trailing_comma_is_named_as_such(client: Client) -> None:
    """`{"phone_number": "+14155550123",}` (a trailing comma, as JavaScript and Python allow)
    got "Expecting property name enclosed in double quotes: line 1 column 34 (char 33)",
    which sent the user looking for quotes (probe BB)."""
    json_type = {"Content-Type": "application/json"}
    body = '{\n  "phone_number": "+14155550123",\n  "name": "Ann",\n}'
    resp = await client.post("/calls/outbound", data=body, headers=json_type)
    assert resp.status == 400
    assert (await resp.json())["error"] == (
        "request body is not valid JSON: a trailing comma at line 3 column 16, before '}'"
        " (JSON allows none: remove it)"
    )
    resp = await client.post("/dnc", data='{"numbers": ["+14155550123",]}', headers=json_type)
    assert (await resp.json())["error"] == (
        "request body is not valid JSON: a trailing comma at line 1 column 28, before ']'"
        " (JSON allows none: remove it)"
    )
    resp = await client.post("/calls/outbound", data='{"a": 1 "b": 2}', headers=json_type)
    assert (await resp.json())["error"] == (
        "request body is not valid JSON: Expecting ',' delimiter: line 1 column 9 (char 8)"
    )


async def test_unknown_route_is_json(client: Client) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["status"] == "error"


async def test_readyz_names_a_config_path_that_is_no_file(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """config.json turned into a directory under a running server: every call failed with
    503 while /readyz said ok. A missing directory is created by the probe, as by a write
    (it said 503 until a call, which the load balancer would never send, created it)."""
    missing = tmp_path / "sub" / "dir" / "config.json"
    client = await start_app(config_path=missing)
    assert (await client.get("/readyz")).status == 200
    assert missing.parent.is_dir()
    missing.mkdir()  # config.json is now a directory
    ready = await client.get("/readyz")
    assert ready.status == 503
    (detail,) = (await ready.json())["details"]
    assert detail == {
        "component": "config",
        "error": "config.json: not a regular file (a directory, a device, a FIFO or a socket)",
    }
    # A call refused for it says so in its lines, and no removal of a record it never had
    # fails after them (four ERROR lines for one call).
    with caplog.at_level(logging.INFO):
        assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 503
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not any("remove" in line for line in errors), errors
    assert len(errors) == 2, errors  # the store's line and the call's


async def test_webhook_path_refuses_every_route_the_api_has(client: Client) -> None:
    """WEBHOOK_PATH is refused under API_PREFIXES; a route added outside them would let a
    WEBHOOK_PATH land on it again (every webhook answered by the API, no call settling)."""
    from common.settings import API_PREFIXES
    from handlers.webhooks import other_spelling

    webhook_path = client.app[SETTINGS].webhook_path
    webhook_paths = {webhook_path, other_spelling(webhook_path)}  # with its trailing slash
    paths = {
        route.resource.canonical
        for route in client.app.router.routes()
        if route.resource is not None and route.resource.canonical not in webhook_paths
    }
    outside = [p for p in paths if not any(p == a or p.startswith(a + "/") for a in API_PREFIXES)]
    assert paths and not outside, outside


async def test_a_config_lock_held_elsewhere_is_a_503_not_a_wait_without_end(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flock config.json.lock sleep 25` held a placement 24.5 s (and 40 of them 19 s each),
    the client's retry then placing a second call. A bounded wait, then 503 naming the lock,
    nothing dialled; the next placement, with the lock free, is placed."""
    monkeypatch.setattr(config_store_module, "LOCK_WAIT_S", 0.2)
    held = os.open(tmp_path / "config.json.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
        body = await resp.json()
    finally:
        os.close(held)
    assert resp.status == 503, body
    # Named, but not where it is on the server (its absolute path, in the log line only).
    assert body["error"] == (
        "could not store the call's configuration: could not write config (lock):"
        " …/config.json.lock is held by another process"
    )
    assert str(tmp_path) not in json.dumps(body)
    assert sandbox_requests(client, "CreateSIPParticipant") == []
    assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 200


HOLD_CONFIG_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


async def test_a_config_lock_held_by_another_process_answers_at_once_and_recovers(
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """config.json.lock held by another process (a script's update_config that hangs,
    `flock config.json.lock sleep 600`) cost every call the whole lock wait (5 s) before its
    503, one after the other, and the log never said who held it. As with calls.db's lock:
    once one write waited the whole wait, the next ones are answered 503 at once, naming the
    holder (its name only) with Retry-After; said once in the log, and once it is free, when
    calls are placed again by themselves."""
    caplog.set_level(logging.INFO, logger="common.config_store.store")
    wait_s = 1.0  # the app's 5 s, shorter: the test sees the difference all the same
    monkeypatch.setattr(config_store_module, "LOCK_WAIT_S", wait_s)
    holder = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", HOLD_CONFIG_LOCK, str(tmp_path / "config.json.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "held\n"
        with open(f"/proc/{holder.pid}/comm", encoding="utf-8") as comm:
            name = comm.read().strip()
        first = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
        assert first.status == 503
        started = time.monotonic()
        answers = await asyncio.gather(
            *(client.post("/calls/outbound", json=SEED_EXAMPLES[0]) for _ in range(6))
        )
        elapsed = time.monotonic() - started
        assert [a.status for a in answers] == [503] * 6
        for answer in answers:
            assert (await answer.json())["error"] == (
                "could not store the call's configuration: could not write config (lock):"
                f" …/config.json.lock is held by another process ({name})"
            )
            assert answer.headers["Retry-After"] == "2"
        assert elapsed < wait_s * 0.75, elapsed  # none waited the whole wait again
        said = [r.getMessage() for r in caplog.records if "is held by pid" in r.getMessage()]
        assert len(said) == 1 and f"pid {holder.pid} ({name})" in said[0], said
        assert sandbox_requests(client, "CreateSIPParticipant") == []
        holder.stdin.close()
        assert await asyncio.to_thread(holder.wait, 10) == 0
    finally:
        holder.kill()
        holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 200
    back = [r.getMessage() for r in caplog.records if "is free again" in r.getMessage()]
    assert len(back) == 1, back


async def test_a_stalled_config_write_is_answered_at_its_deadline(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write of config.json that never returns (a stalled disk under it, an NFS server
    gone) held its call's request, and every call's after it, without an answer for as long
    as it stalled (the calls database's answer such requests 503 at their deadline). Now each
    is answered 503 by WRITE_WAIT_S, nothing dialled; the call queued behind it is never
    written, and calls are placed again once the disk lets the stalled write through."""
    monkeypatch.setattr(config_store_module, "WRITE_WAIT_S", 1.0, raising=False)
    held = hold_config_write(monkeypatch, b"Stalled")
    go, stalled = held.go, held.held
    try:
        first = asyncio.ensure_future(
            client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Stalled"))
        )
        assert await asyncio.to_thread(stalled.wait, 10)
        behind = client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Behind"))
        started = time.monotonic()
        answers = await asyncio.wait_for(asyncio.gather(first, behind), 5)
        assert time.monotonic() - started < 4
        for answer in answers:
            assert answer.status == 503
            assert (await answer.json())["error"] == (
                "could not store the call's configuration: could not write config:"
                " config.json did not answer in 1 s"
            )
            assert answer.headers["Retry-After"] == "2"
        assert sandbox_requests(client, "CreateSIPParticipant") == []
    finally:
        go.set()
    placed = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="After"))
    assert placed.status == 200
    names = [r["caller_name"] for r in config_calls(tmp_path / "config.json").values()]
    assert "Behind" not in names and "After" in names


async def test_a_list_route_refuses_a_query_parameter_it_does_not_take(
    start_app: AppFactory,
) -> None:
    """`GET /campaigns?status=running` listed every campaign: the filter it does not have was
    dropped without a word."""
    client = await start_app()
    for path, expected in (
        ("/campaigns?status=running", "limit, before"),
        ("/calls?stauts=completed", "status, limit, before"),
        ("/dnc?number=%2B14155550123", "limit, after"),
        ("/calls/call-000000000000/deliveries?state=failed", "none"),
        ("/calls/call-000000000000?verbose=1", "none"),
    ):
        resp = await client.get(path)
        assert resp.status == 400, path
        error = (await resp.json())["error"]
        assert error.startswith("unknown query parameter") and error.endswith(expected), error
    assert (await client.get("/calls?status=completed&limit=5")).status == 200
    assert (await client.get("/healthz?probe=1")).status == 200  # no API read: not checked


async def test_openapi_documents_the_400_of_a_query_parameter_a_route_does_not_take(
    start_app: AppFactory,
) -> None:
    """Regression: `GET /calls/{id}?x=1`, `POST /calls/{id}/hangup?x=1`, `POST /dnc?x=1`
    and every other API route that takes no such parameter answer 400 ("unknown query
    parameter"), but /openapi.json gave their 400 as "The path or query holds a NUL or bytes
    that are not UTF-8" (or, for POST /dnc, "The body is not UTF-8 JSON") only. Each route
    that refuses one now says so in its documented 400."""
    client = await start_app()
    spec = await (await client.get("/openapi.json")).json()
    refusing = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            url = re.sub(r"\{[a-z_]+\}", "x", path) + "?unknown_x=1"
            resp = await client.request(method.upper(), url)
            if resp.status != 400:
                continue
            error = (await resp.json())["error"]
            if not error.startswith("unknown query parameter"):
                continue
            refusing.append((method, path))
            described = operation["responses"]["400"]["description"].lower()
            assert "query parameter" in described or "any query" in described, (method, path)
    assert len(refusing) >= 15, refusing  # every API route


async def test_openapi_says_each_422_post_dnc_gives(start_app: AppFactory) -> None:
    """Regression: /openapi.json gave POST /dnc's 422 as "A number is not a phone number",
    but an empty list, over 10,000 numbers, no list and an unknown field are 422 too; a
    client reading the document took them for a bad number."""
    client = await start_app()
    spec = await (await client.get("/openapi.json")).json()
    described = spec["paths"]["/dnc"]["post"]["responses"]["422"]["description"]
    for body, named in (
        ({"numbers": []}, "1 to 10000"),
        ({"numbers": ["+14155550100"] * 10_001}, "1 to 10000"),
        ({"numbers": "+14155550100"}, "not a list"),
        ({"numbers": ["+14155550100"], "note": "x"}, "unknown field"),
        ({"numbers": ["42"]}, "no phone numbers"),
    ):
        resp = await client.post("/dnc", json=body)
        assert resp.status == 422, body
        assert named in described, (body, described)


async def test_a_write_refuses_a_query_parameter_it_does_not_take(
    start_app: AppFactory,
) -> None:
    """`POST /calls/outbound?name=Bob&language=es` placed an English call to "Guest": the
    call's fields put in the query were dropped without a word."""
    client = await start_app()
    body = {"phone_number": "+34612345678"}
    resp = await client.post("/calls/outbound?name=Bob&language=es", json=body)
    assert resp.status == 400
    assert (await resp.json())["error"] == (
        "unknown query parameter 'name'; this route takes none (its fields go in the JSON body)"
    )
    assert (await (await client.get("/calls")).json())["calls"] == []
    placed = await client.post("/calls/outbound", json=body)
    call_id = (await placed.json())["call_id"]
    resp = await client.post(f"/calls/{call_id}/hangup?reason=test")
    assert resp.status == 400, await resp.text()
    assert (await client.post(f"/calls/{call_id}/hangup")).status == 200
    assert (await client.post("/dnc?note=x", json=body)).status == 400


async def test_a_call_reads_as_utf8_and_says_so(client: Client) -> None:
    """Written as UTF-8 (not \\u-escaped), the answer names its charset: clients that guess
    Latin-1 without one garbled every accented name."""
    placed = await client.post("/calls/outbound", json=SEED_EXAMPLES[1])
    call_id = (await placed.json())["call_id"]
    resp = await client.get(f"/calls/{call_id}")
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    raw = await resp.read()
    assert "Carlos García".encode() in raw
    assert json.loads(raw)["name"] == "Carlos García"


async def test_a_retry_while_the_first_request_is_still_placing_its_call_is_told_so(
    client: Client,
) -> None:
    """A retry arriving while the first request waited on LiveKit's dispatch was answered
    200 "dialing", and, when that request's server then stopped, nobody was ever dialled."""
    # The first request's dispatch held until the retry is answered (a 1 s delay, the retry
    # sent 0.3 s on: on a loaded machine the first could be not yet recorded, or placed).
    dispatch = hold_requests(client.app[SANDBOX], "CreateDispatch")
    headers = {"Idempotency-Key": "order-slow"}
    first = asyncio.ensure_future(
        client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers)
    )
    await dispatch.arrival()
    early = await client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers)
    assert early.status == 409 and early.headers["Retry-After"] == "2"
    assert "still being placed" in (await early.json())["error"]
    dispatch.release()
    placed = await first
    assert placed.status == 200
    later = await client.post("/calls/outbound", json=SEED_EXAMPLES[0], headers=headers)
    assert later.status == 200 and later.headers["Idempotent-Replay"] == "1"
    assert await later.read() == await placed.read()
    assert len(sandbox_requests(client, "CreateSIPParticipant")) == 1
