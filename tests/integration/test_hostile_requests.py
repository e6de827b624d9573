"""Requests an outsider can send that once got a 500 (or a misleading 503), or flooded the log:
bytes that are not UTF-8 in headers, a path or a query; a body whose Content-Encoding lies; a
client that leaves mid-body; a signed event with a lone surrogate. Each now gets a clear 4xx
(or, for the client that left, a quiet log), and the server serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_TEST_BODY, raw_answer, wait_for
from tests.integration.test_webhooks import quiet_app, sign
from tests.processes import ServerProcess

Client = TestClient[Any, Any]

SEED_BODY = json.dumps(SEED_TEST_BODY).encode()


async def raw_request(client: Client, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send `head` (request line and headers, as bytes) and `body` over a socket of our own;
    the status and the body of the answer (the connection is closed by the request)."""
    answer = await raw_answer(client, head + b"Connection: close\r\n\r\n" + body, 10)
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def post_head(path: str, body: bytes, *extra: bytes) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1".encode(),
        b"Host: localhost",
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n"


def signature_for(path: str, body: bytes) -> tuple[bytes, ...]:
    """The Authorization header a signed route (LiveKit's webhooks, agents' reports) needs
    before it reads a body, as a header line for `post_head`; none for another route."""
    if path not in ("/webhooks/livekit", "/agent/reports"):
        return ()
    return (b"Authorization: " + sign(body).encode(),)


async def still_serving(client: Client) -> None:
    resp = await client.post("/calls/outbound", json=SEED_TEST_BODY)
    assert resp.status == 200, await resp.text()


async def answer_to(client: Client, raw: bytes) -> tuple[bytes, bytes]:
    """Sends `raw` on a connection of its own and keeps it open: the answer's head and body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            return head, await reader.readexactly(length)
    finally:
        writer.close()


@pytest.mark.parametrize("key", [b"caf\xe9", b"\xff\xfe"])
async def test_an_idempotency_key_that_is_not_utf8_is_a_400(
    start_app: AppFactory, key: bytes
) -> None:
    client = await start_app()
    head = post_head("/calls/outbound", SEED_BODY, b"Idempotency-Key: " + key)
    status, body = await raw_request(client, head, SEED_BODY)
    assert status == 400, body
    assert json.loads(body)["error"] == "Idempotency-Key must be UTF-8 text"
    await still_serving(client)


async def test_two_idempotency_keys_are_a_400_and_place_nothing(start_app: AppFactory) -> None:
    """Which would a retry send? The first was taken, the second ignored: a retry with the
    second placed the call again."""
    client = await start_app()
    head = post_head(
        "/calls/outbound", SEED_BODY, b"Idempotency-Key: key-a\r\nIdempotency-Key: key-b"
    )
    status, body = await raw_request(client, head, SEED_BODY)
    assert status == 400, body
    assert json.loads(body)["error"] == "Idempotency-Key given more than once"
    assert (await (await client.get("/calls")).json())["calls"] == []
    await still_serving(client)


@pytest.mark.parametrize("value", [b"Bearer \xff", b"Bearer caf\xe9", b"\xff"])
async def test_a_token_that_is_not_utf8_is_a_401(start_app: AppFactory, value: bytes) -> None:
    client = await start_app(calls_api_token="s3cr3t-token-abcdef")
    head = post_head("/calls/outbound", SEED_BODY, b"Authorization: " + value)
    status, body = await raw_request(client, head, SEED_BODY)
    assert status == 401, body
    assert json.loads(body)["error"] == "missing or invalid API token"


@pytest.mark.parametrize("path", ["/calls/outbound", "/webhooks/livekit", "/campaigns", "/dnc"])
async def test_a_body_that_is_not_the_gzip_it_claims_is_a_400(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """The answer was right, but aiohttp, draining the rest of the body after it, met the
    error again and logged an ERROR with three chained tracebacks: any client could flood
    the log. (Where aiohttp's parser itself finds the encoding broken, as with this body as
    deflate, it answers on its own: the next test.)"""
    client = await start_app()
    head = post_head(path, b"abcd", b"Content-Encoding: gzip", *signature_for(path, b"abcd"))
    status, body = await raw_request(client, head, b"abcd")
    assert status == 400, body
    assert json.loads(body)["error"].startswith("request body could not be read")
    await still_serving(client)
    await asyncio.sleep(0.1)  # the drain after the answer
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud]


@pytest.mark.parametrize(
    ("encoding", "shown"),
    [
        (b"x-gzip", "x-gzip"),
        (b"compress", "compress"),
        (b"gzip, gzip", "gzip, gzip"),
        (b"gzip\r\nContent-Encoding: gzip", "gzip, gzip"),  # aiohttp decodes the first
    ],
)
@pytest.mark.parametrize("path", ["/calls/outbound", "/campaigns", "/dnc"])
async def test_a_body_in_an_encoding_left_undecoded_is_a_415(
    start_app: AppFactory, path: str, encoding: bytes, shown: str
) -> None:
    """aiohttp decodes gzip and deflate and leaves any other Content-Encoding's bytes as they
    came: a call sent gzipped as x-gzip (an alias of gzip) was read as its compressed bytes
    and refused as "request body is not UTF-8 (invalid start byte at byte 1)"."""
    client = await start_app()
    packed = gzip.compress(gzip.compress(SEED_BODY) if b"," in encoding else SEED_BODY)
    head = post_head(path, packed, b"Content-Encoding: " + encoding)
    status, body = await raw_request(client, head, packed)
    assert status == 415, body
    assert json.loads(body)["error"] == (
        f"request body's Content-Encoding {shown!r} is not supported: send gzip, deflate or none"
    )
    assert (await (await client.get("/calls")).json())["calls"] == []
    await still_serving(client)


async def test_a_body_in_a_transfer_coding_left_undone_is_a_501(start_app: AppFactory) -> None:
    """`Transfer-Encoding: gzip, chunked`: aiohttp undoes the chunking alone, and the call's
    gzipped bytes were refused as "request body is not UTF-8"."""
    client = await start_app()
    packed = gzip.compress(SEED_BODY)
    head = (
        b"POST /calls/outbound HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n"
    )
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    status, body = await raw_request(client, head, chunked)
    assert status == 501, body
    assert json.loads(body)["error"].startswith(
        "request body's Transfer-Encoding 'gzip, chunked' is not supported: send chunked,"
    )
    assert (await (await client.get("/calls")).json())["calls"] == []
    await still_serving(client)


async def test_a_client_leaving_mid_body_is_no_error(tmp_path: Path) -> None:
    """A real server process (as users run it): each client that left was an ERROR with a
    traceback, a cheap way to flood the log; now one DEBUG line, and nothing else."""
    env = {
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "LOG_LEVEL": "DEBUG",
    }
    server = ServerProcess(tmp_path, "server", env)
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            for _ in range(5):
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(post_head("/calls/outbound", b"x" * 1000) + b"\r\n" + b'{"phone')
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.close()
            async with session.post(f"{server.url}/calls/outbound", json=SEED_TEST_BODY) as resp:
                assert resp.status == 200, await resp.text()
        logs = server.logs()
        assert logs.count("client closed the connection during POST /calls/outbound") == 5, logs
        assert "ERROR" not in logs and "Traceback" not in logs, logs
    finally:
        server.stop()


@pytest.mark.parametrize(
    "target",
    [
        "/calls/%00",
        "/calls/%00/hangup",
        "/campaigns/%00",
        "/dnc?after=%00",
        "/calls?status=%00",
        # escapes that are not UTF-8: decoded to U+FFFD, they named something else (404s,
        # an empty page of /dnc, a 422)
        "/calls/%C0%AF",
        "/calls/%FF",
        "/dnc?after=%FF",
        "/calls?before=%FF",
        "/campaigns/cmp-%E9",
    ],
)
async def test_a_nul_or_non_utf8_in_a_path_or_query_is_a_400(
    start_app: AppFactory, target: str
) -> None:
    client = await start_app()
    method = "POST" if target.endswith("/hangup") else "GET"
    status, body = await raw_request(client, f"{method} {target} HTTP/1.1\r\nHost: x\r\n".encode())
    assert status == 400, body
    assert "NUL or bytes that are not UTF-8" in json.loads(body)["error"]


async def test_error_answers_are_counted(start_app: AppFactory) -> None:
    client = await start_app(calls_api_token="s3cr3t-token-abcdef")
    assert (await client.get("/calls/call-000000000000")).status == 401
    auth = {"Authorization": "Bearer s3cr3t-token-abcdef"}
    assert (await client.get("/calls/call-000000000000", headers=auth)).status == 404
    bad = await client.post("/calls/outbound", json={"phone_number": "nope"}, headers=auth)
    assert bad.status == 422
    metrics = await (await client.get("/metrics")).text()

    def counted(route: str, method: str, code: int) -> float:
        pattern = (
            rf'http_requests_total\{{code="{code}",method="{method}",route="{re.escape(route)}"\}}'
            r" (\S+)"
        )
        found = re.search(pattern, metrics)
        return float(found.group(1)) if found else 0.0

    assert counted("/calls/{call_id}", "GET", 401) == 1
    assert counted("/calls/{call_id}", "GET", 404) == 1
    assert counted("/calls/outbound", "POST", 422) == 1


async def test_made_up_methods_are_counted_as_one(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's pure-Python parser (AIOHTTP_NO_EXTENSIONS, or no C parser for the platform)
    takes any token as a method: each made-up one became a series of http_requests_total of
    its own, for good (20,000 of them: 33 MB, and a /metrics of 43 MB)."""
    from aiohttp import http_parser, web_protocol

    monkeypatch.setattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    client = await start_app()
    for n in range(3):
        status, _ = await raw_request(client, f"M{n} /healthz HTTP/1.1\r\nHost: x\r\n".encode())
        assert status == 405
    metrics = await (await client.get("/metrics")).text()
    assert 'method="M0"' not in metrics
    assert 'http_requests_total{code="405",method="other",route="unmatched"} 3.0' in metrics
    assert 'code="200",method="GET",route="/healthz"' not in metrics  # (none was sent)


async def test_a_signed_event_with_a_lone_surrogate_is_a_400(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    for body in (
        b'{"event":"room_finished","id":"\\ud800","room":{"name":"call-000000000000"}}',
        b'{"event":"room_started","id":"EV_1","room":{"name":"call-\\udc00"}}',
    ):  # (one in a participant's attribute leaves it out: test_unstorable_attributes.py)
        resp = await client.post(
            "/webhooks/livekit", data=body, headers={"Authorization": sign(body)}
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"] == "webhook body is not a LiveKit event"
    await still_serving(client)


@pytest.mark.parametrize("path", ["/healthz", "/calls", "/metrics", "/openapi.json"])
async def test_head_answers_on_get_routes(start_app: AppFactory, path: str) -> None:
    client = await start_app()
    resp = await client.head(path)
    assert resp.status == 200
    assert await resp.read() == b""


@pytest.mark.parametrize("query", ["limit=١٢", "limit=１２", "limit=1_0", "before=١٧٠٠٠٠٠٠٠٠"])
async def test_numbers_in_a_query_are_ascii_digits(start_app: AppFactory, query: str) -> None:
    """int() and float() also read Arabic-Indic or full-width digits; a parameter is ASCII."""
    client = await start_app()
    resp = await client.get(f"/calls?{query}")
    assert resp.status == 400, await resp.text()


async def test_a_signed_report_with_a_lone_surrogate_is_a_400(start_app: AppFactory) -> None:
    """The agent's token signs its body, but a lone surrogate (a JSON "\\ud800" escape) in
    a transcript cannot be stored: 400 `not an agent report`, not a 500."""
    from common.contracts import REPORTS_PATH
    from tests.integration.test_call_results import report_token

    client = await start_app(sandbox_time_scale=100.0)
    resp = await client.post("/calls/outbound", json=SEED_TEST_BODY)
    call_id = (await resp.json())["call_id"]
    body = (
        b'{"call_id": "%s", "seq": 1, "kind": "turn", "at": 1.0,'
        b' "turn": {"role": "callee", "text": "hi \\ud800", "at_s": 0.4}}' % call_id.encode()
    )
    headers = {"Authorization": "Bearer " + report_token(body, call_id)}
    resp = await client.post(REPORTS_PATH, data=body, headers=headers)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "not an agent report"
    await still_serving(client)


async def test_additional_params_nested_deeply_are_a_422_not_a_500(start_app: AppFactory) -> None:
    """~600 bytes of nested lists broke the event encoder after the config was written."""
    client = await start_app()
    deep = "[" * 300 + "]" * 300
    body = b'{"phone_number": "+14155557720", "additional_params": {"a": %s}}' % deep.encode()
    resp = await client.post(
        "/calls/outbound", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 422, await resp.text()
    (detail,) = (await resp.json())["details"]
    assert detail["field"] == "additional_params"
    assert "nests deeper than 32 levels" in detail["error"]
    assert (await (await client.get("/calls")).json())["calls"] == []
    await still_serving(client)


async def test_separated_phone_numbers_are_masked_in_the_access_log(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    for target in ("/dnc/+1-415-555-0199", "/dnc/%2B34%20612%2000%200111"):
        await client.delete(target)
    await client.get("/dnc?after=%2B1(415)555.0100")
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 3, lines
    text = "\n".join(lines)
    for whole in ("415-555", "612%2000", "(415)555"):
        assert whole not in text, text
    assert "0199" in text and "0111" in text and "0100" in text  # the last four stay


# A deflate body cut short ("abcd") is not among them: the app answers it, as any body its
# Content-Encoding cannot decode (test_GY_cut_compressed_bodies.py).
MALFORMED = {
    "brotli body": post_head("/dnc", b"abcd", b"Content-Encoding: br") + b"\r\nabcd",
    "long path": b"GET /calls/+1415555" + b"0" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "long header": b"GET /healthz HTTP/1.1\r\nX-Long: " + b"y" * 10_000 + b"\r\n\r\n",
    "no such method": b"FO(O /calls HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
async def test_requests_the_http_parser_refuses_are_no_errors_in_the_log(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    """aiohttp answers these itself (a 400, or 415 for br) and logged each as an ERROR with its
    traceback: a cheap log flood. Now one DEBUG line each, with digits masked; their access
    lines too (at INFO they said only `"UNKNOWN / HTTP/1.0" 400`, without the reason)."""
    client = await start_app()
    caplog.set_level(level)
    for raw in MALFORMED.values():
        answer = await raw_answer(client, raw)
        assert answer.split()[1] in (b"400", b"415"), answer[:200]
    await still_serving(client)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert all(r.levelno == logging.DEBUG and not r.exc_info for r in records), records
    refused = [r.getMessage() for r in records if "malformed request" in r.getMessage()]
    assert len(refused) == (len(MALFORMED) if level == logging.DEBUG else 0), refused
    assert not any("14155550000" in line for line in refused), refused
    access = [
        r.getMessage()
        for r in caplog.records
        if r.name == "aiohttp.access" and ('" 400 ' in r.getMessage() or '" 415 ' in r.getMessage())
    ]
    assert len(access) == (len(MALFORMED) if level == logging.DEBUG else 0), access


@pytest.mark.parametrize("encoding", [b"br", b"zstd", b"BR"])
async def test_a_body_in_brotli_or_zstd_gets_the_apis_json_415(
    start_app: AppFactory, encoding: bytes
) -> None:
    """aiohttp's parser refuses them before the app sees them: the answer was its plain-text
    400 "Can not decode content-encoding: brotli (br). Please install `Brotli`", not the
    API's JSON, and it told the client to install a package."""
    client = await start_app()
    body = json.dumps(SEED_TEST_BODY).encode()
    raw = post_head("/calls/outbound", body, b"Content-Encoding: " + encoding) + b"\r\n" + body
    head, answer = await answer_to(client, raw)
    assert head.split()[1] == b"415", head
    assert b"application/json" in head.lower()
    error = json.loads(answer)
    assert error["status"] == "error" and error["details"] == []
    assert error["error"] == (
        f"request body's Content-Encoding {encoding.decode().lower()!r} is not supported:"
        " send gzip, deflate or none"
    )
    assert "install" not in error["error"]
    assert client.app[SANDBOX].dials == []
    await still_serving(client)


@pytest.mark.parametrize("name", [n for n in MALFORMED if n != "brotli body"])
async def test_requests_the_http_parser_refuses_are_answered_in_json(
    start_app: AppFactory, name: str
) -> None:
    client = await start_app()
    answer = await raw_answer(client, MALFORMED[name])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", head
    assert b"application/json" in head.lower(), head
    assert b"\r\nserver: outbound-caller\r\n" in head.lower(), head  # no versions
    error = json.loads(body)
    assert error["status"] == "error" and error["error"], error


@pytest.mark.parametrize(
    "path", ["/calls/outbound", "/webhooks/livekit", "/agent/reports", "/campaigns", "/dnc"]
)
async def test_a_body_that_never_comes_is_a_408(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Headers, then 5 of 100 body bytes, then nothing: the connection was held for good (a
    few thousand such clients used up the server's file descriptors)."""
    from handlers import http

    monkeypatch.setattr(http, "BODY_READ_TIMEOUT_S", 0.3)
    client = await start_app()
    head, body = await answer_to(
        client, post_head(path, b"x" * 100, *signature_for(path, b"x" * 100)) + b"\r\n" + b'{"ph'
    )
    assert head.split()[1] == b"408", head
    assert b"connection: close" in head.lower()
    assert b"did not arrive within 0.3 s" in body
    await still_serving(client)


@pytest.mark.parametrize("stop", ["in the first part", "between the parts"])
async def test_a_multipart_campaign_that_stops_coming_is_a_408(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """A campaign upload read part by part had no bound at all: headers and half a part,
    then nothing, held the connection for good."""
    from handlers import http

    monkeypatch.setattr(http, "BODY_READ_TIMEOUT_S", 0.3)
    client = await start_app()
    options = b'--b\r\nContent-Disposition: form-data; name="options"\r\n\r\n{"name": "x"}\r\n'
    rows = b'--b\r\nContent-Disposition: form-data; name="recipients"\r\n\r\nphone_number\r\n'
    whole = options + rows + b"+14155557720\r\n--b--\r\n"
    sent = options + rows if stop == "between the parts" else options[:60]
    head = post_head("/campaigns", whole).replace(
        b"application/json", b"multipart/form-data; boundary=b"
    )
    answer, _ = await answer_to(client, head + b"\r\n" + sent)
    assert answer.split()[1] == b"408", answer
    assert b"connection: close" in answer.lower()
    await still_serving(client)


async def test_a_gzip_body_that_stops_halfway_is_a_408(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content-Length counts the bytes on the wire: half a gzip body can already decompress
    to more than that, and must not pass for a body that has all arrived."""
    import gzip

    from handlers import http

    monkeypatch.setattr(http, "BODY_READ_TIMEOUT_S", 0.3)
    client = await start_app()
    body = json.dumps({"phone_number": "+14155557720", "name": "Z" + "z" * 30000}).encode()
    packed = gzip.compress(body)
    head, _ = await answer_to(
        client,
        post_head("/calls/outbound", packed, b"Content-Encoding: gzip")
        + b"\r\n"
        + packed[: len(packed) * 3 // 4],  # already more than Content-Length, unpacked
    )
    assert head.split()[1] == b"408", head
    await still_serving(client)


@pytest.mark.parametrize(
    # /webhooks/livekit: no signature, refused before a byte of its body is read (401)
    ("path", "status"),
    [("/webhooks/livekit", b"401"), ("/calls/outbound", b"413"), ("/x", b"404")],
)
async def test_a_gzip_bomb_left_unread_is_not_unpacked_after_the_answer(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, path: str, status: bytes
) -> None:
    """aiohttp reads an unread body to its end after the answer, unpacking it: 1 MB of gzip
    sent to any path (no token, no signature) unpacked to 1 GB on the server's one thread,
    and two such clients made /healthz take seconds. Now the answer closes the connection and
    what remains is never unpacked."""
    from aiohttp import compression_utils

    unpacked = [0]
    decompress = compression_utils.ZLibDecompressor.decompress_sync

    def counted(self: Any, data: bytes, max_length: int = 0) -> bytes:
        out: bytes = decompress(self, data, max_length)
        unpacked[0] += len(out)
        return out

    monkeypatch.setattr(compression_utils.ZLibDecompressor, "decompress_sync", counted)
    client = await start_app()
    packed = gzip.compress(b"\0" * (32 * 1024 * 1024))
    head = post_head(path, packed, b"Content-Encoding: gzip")
    closed = False
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + b"\r\n" + packed)
        async with asyncio.timeout(5):
            answer = await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(TimeoutError):  # (before, the connection stayed open)
            closed = await asyncio.wait_for(reader.read(), 3) is not None
    finally:
        writer.close()
    assert answer.split()[1] == status, answer
    assert unpacked[0] < 8 * 1024 * 1024, f"{unpacked[0]} bytes unpacked"
    assert closed
    await still_serving(client)


async def requests_never_read(
    client: TestClient[Any, Any],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a small receive buffer that sent 200 GET /openapi.json (13 MB of
    answers) and reads none of them."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.server.host, client.server.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n" * 200)
    await writer.drain()
    return reader, writer


async def test_a_client_that_reads_no_answer_loses_its_connection(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests sent, answers never read: aiohttp waited for the client without end, and the
    connection, its request's task and its answer were held for good (no token needed:
    /openapi.json). Now the connection is dropped once an answer has waited
    ANSWER_SEND_TIMEOUT_S to be taken."""

    from handlers import http

    monkeypatch.setattr(http, "ANSWER_SEND_TIMEOUT_S", 0.5, raising=False)
    client = await start_app()
    reader, writer = await requests_never_read(client)
    try:
        await asyncio.sleep(1.5)  # nothing read meanwhile
        dropped = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                try:
                    while await reader.read(1 << 20):
                        pass
                except ConnectionResetError:
                    pass
                dropped = True
    finally:
        writer.close()
    assert dropped, "the connection was still open"
    await still_serving(client)


async def test_an_answer_dropped_unread_is_not_logged_or_counted_as_sent(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer whose connection was dropped after ANSWER_SEND_TIMEOUT_S (above) was
    access-logged `200` and counted code="200" in http_requests_total, as if its client had
    it. It is logged and counted `200-aborted`; the answers the client did take stay `200`."""

    from handlers import http

    monkeypatch.setattr(http, "ANSWER_SEND_TIMEOUT_S", 0.5, raising=False)
    client = await start_app()
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    _, writer = await requests_never_read(client)
    try:

        async def logged_aborted() -> bool:
            return any("aborted" in r.getMessage() for r in caplog.records)

        await wait_for(logged_aborted, timeout=10)
    finally:
        writer.close()
    lines = [r.getMessage() for r in caplog.records if "/openapi.json" in r.getMessage()]
    aborted = [line for line in lines if '" 200-aborted ' in line]
    assert len(aborted) == 1, lines
    assert all('" 200 ' in line for line in lines if line not in aborted)
    metrics = await (await client.get("/metrics")).text()
    aborted_count = 'http_requests_total{code="200-aborted",method="GET",route="/openapi.json"}'
    assert f"{aborted_count} 1.0" in metrics.splitlines()
    await still_serving(client)


async def test_an_answer_whose_client_left_is_not_logged_or_counted_as_sent(
    tmp_path: Path,
) -> None:
    """A real server process (the test server cancels a handler whose client left; a server
    as users run it finishes it): a client that sent its call and left before the answer was
    access-logged and counted `200`, an answer nobody got. Both say `200-aborted`."""
    env = {
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
    }
    server = ServerProcess(tmp_path, "server", env)
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            body = json.dumps(SEED_TEST_BODY).encode()
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(post_head("/calls/outbound", body) + b"\r\n" + body)
            await writer.drain()
            writer.close()  # gone before the call is placed and answered

            async def placed() -> bool:
                return "POST /calls/outbound" in server.logs()

            await wait_for(placed, timeout=10)
            async with session.get(f"{server.url}/metrics") as resp:
                metrics = (await resp.text()).splitlines()
        (line,) = [x for x in server.logs().splitlines() if "POST /calls/outbound" in x]
        assert '" 200-aborted ' in line, line
        counted = 'http_requests_total{code="200-aborted",method="POST",route="/calls/outbound"}'
        assert f"{counted} 1.0" in metrics, [m for m in metrics if "outbound" in m]
    finally:
        server.stop()


async def test_a_key_given_twice_is_a_400(start_app: AppFactory) -> None:
    """`{"phone_number": A, "phone_number": B}`: a proxy that checks the first key and this
    server, which took the last, disagreed on the number dialled."""
    client = await start_app()
    body = b'{"phone_number": "+14155557705", "name": "A", "phone_number": "+14155550503"}'
    resp = await client.post(
        "/calls/outbound", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "'phone_number' appears more than once" in (await resp.json())["error"]
    nested = b'{"phone_number": "+14155557705", "additional_params": {"a": 1, "a": 2}}'
    resp = await client.post(
        "/calls/outbound", data=nested, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await (await client.get("/calls")).json())["calls"] == []


async def test_a_query_parameter_given_twice_is_a_400(start_app: AppFactory) -> None:
    """Every route read the first of them: `status=completed&status=busy` listed completed
    calls alone, and a proxy checking the last `calls_per_second` of an upload passed a
    campaign the server paced by the first."""
    client = await start_app()
    resp = await client.get("/calls?status=completed&limit=5&status=busy")
    assert resp.status == 400
    assert (await resp.json())["error"] == "query parameter 'status' is given more than once"
    csv = b"phone_number\n+14155557705\n"
    resp = await client.post(
        "/campaigns?name=x&calls_per_second=100&calls_per_second=1",
        data=csv,
        headers={"Content-Type": "text/csv"},
    )
    assert resp.status == 400
    assert "'calls_per_second' is given more than once" in (await resp.json())["error"]
    assert (await (await client.get("/campaigns")).json())["campaigns"] == []
    # once each, or a list in one parameter, is what every route takes
    assert (await client.get("/calls?status=completed&limit=5")).status == 200


async def test_a_number_of_thousands_of_digits_is_a_plain_400(start_app: AppFactory) -> None:
    client = await start_app()
    body = b'{"phone_number": "+14155557705", "ringing_timeout_s": ' + b"9" * 5000 + b"}"
    resp = await client.post(
        "/calls/outbound", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert "over 4300 digits" in error and "sys." not in error


async def test_answers_are_not_cached_or_sniffed(start_app: AppFactory) -> None:
    """Answers carry phone numbers and transcripts."""
    client = await start_app()
    placed = await client.post("/calls/outbound", json=SEED_TEST_BODY)
    for resp in (
        placed,
        await client.get("/calls"),
        await client.get("/calls/call-000000000000"),  # an error answer too
        await client.get("/healthz"),
    ):
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Server"] == "outbound-caller"  # aiohttp's named its version


async def test_an_unknown_path_names_no_versions(start_app: AppFactory) -> None:
    client = await start_app()
    resp = await client.get("/wp-login.php")
    assert resp.status == 404 and resp.headers["Server"] == "outbound-caller"


async def test_the_embedded_sandboxs_answers_name_no_versions(start_app: AppFactory) -> None:
    """The sandbox, a server of the same process on a port of its own, said aiohttp's
    `Python/3.11 aiohttp/3.14.5` on every answer: a 404, a Twirp answer, its parser's
    refusals (a sandbox listening beyond loopback: python -m sandbox --host 0.0.0.0)."""
    client = await start_app()
    sandbox = client.app[SANDBOX]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sandbox.url}/wp-login.php") as resp:
            assert resp.status == 404 and "aiohttp" not in resp.headers["Server"], resp.headers
    reader, writer = await asyncio.open_connection("127.0.0.1", URL(sandbox.url).port)
    try:
        writer.write(b"FOO\x01 / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a method
        await writer.drain()
        head = (await asyncio.wait_for(reader.read(), 5)).partition(b"\r\n\r\n")[0]
    finally:
        writer.close()
    assert head.split()[1] == b"400" and b"aiohttp" not in head.lower(), head


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "OPTIONS", "DELETE", "PATCH"])
async def test_any_other_method_of_the_outbound_route_says_it_takes_post(
    start_app: AppFactory, method: str
) -> None:
    """`GET /calls/outbound` (a browser, a misread example) was read as a call id: 404
    "unknown call"; then PUT and OPTIONS said `Allow: GET,HEAD,POST` (probe AP), those of
    /calls/{call_id} too, while GET said POST."""
    client = await start_app()
    resp = await client.request(method, "/calls/outbound")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    if method != "HEAD":
        assert (await resp.json())["status"] == "error"


async def test_a_wrong_method_or_path_is_said_with_what_to_send_instead(
    start_app: AppFactory,
) -> None:
    """aiohttp's own "Method Not Allowed" and "Not Found" named neither the methods a route
    takes nor where the routes are: `POST /calls` (a call placed where calls are listed) and
    `POST /outbound` (the seed's FastAPI route) left a new user guessing (probe BB)."""
    client = await start_app()
    resp = await client.post("/calls", json=SEED_TEST_BODY)
    assert resp.status == 405 and resp.headers["Allow"] == "GET,HEAD"
    assert (await resp.json())["error"] == "POST is not allowed on '/calls'; it takes GET, HEAD"
    resp = await client.get("/calls/outbound")
    assert (await resp.json())["error"] == "GET is not allowed on '/calls/outbound'; it takes POST"
    resp = await client.post("/outbound", json=SEED_TEST_BODY)
    assert resp.status == 404
    assert (await resp.json())["error"] == (
        "no route '/outbound'; every route is listed at /openapi.json"
    )
    resp = await client.get("/" + "x" * 200)
    assert (await resp.json())["error"] == (
        f"no route '/{'x' * 79}…'; every route is listed at /openapi.json"
    )
