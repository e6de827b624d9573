"""Graceful shutdown of the real server process (`server.main()`) on SIGTERM: the request in
flight finishes, new connections are refused, the reaper and the sandbox's call simulations
stop, the database closes cleanly, and a second start reads everything back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.processes import free_port, python_c
from tests.reliability.conftest import Figures, LogGuard

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "shutdown-test-token-0123456789"
SECRET = "shutdown-test-livekit-secret-0123456789abcdef"
NUMBERS = ["+14155550101", "+14155550480", "+14155557730", "+34612345678", "+441234567890"]
IN_FLIGHT_NUMBER = "+14155550102"
SLOW_DIAL_S = 1.5
FINAL = {"completed", "busy", "no_answer", "failed", "voicemail", "canceled"}

# `python server.py`, except that the embedded sandbox dials IN_FLIGHT_NUMBER slowly: a call to
# it is a request in flight for SLOW_DIAL_S, waiting on LiveKit, when the signal comes.
LAUNCHER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import server
from sandbox import Sandbox
start = Sandbox.start
async def slow_start(self):
    await start(self)
    self.inject("CreateSIPParticipant", delay_s={SLOW_DIAL_S},
                when=lambda body: body.get("sip_call_to") == {IN_FLIGHT_NUMBER!r})
Sandbox.start = slow_start
server.main()
"""


class ServerProcess:
    """`python server.py` on a free loopback port, its stderr (the logs) kept in a file."""

    def __init__(self, tmp_path: Path, name: str, *, nohup: bool = False) -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))} | {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "CONFIG_PATH": str(tmp_path / "config.json"),
            "CALLS_DB_PATH": str(tmp_path / "calls.db"),
            "CALLS_API_TOKEN": TOKEN,
            "LIVEKIT_API_SECRET": SECRET,
            "SANDBOX_PORT": "0",
            "SANDBOX_TIME_SCALE": "1",  # calls last 13 to 33 s: all live at shutdown
            "REAPER_INTERVAL_S": "0.05",  # the reaper is busy when the signal comes
            "LOG_LEVEL": "INFO",
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # cwd: a directory with no .env, so only this environment configures the server.
        # As `nohup` starts it: SIGHUP ignored (which exec keeps) before Python starts the
        # server; else as a terminal does, whatever this test run inherited (run under nohup,
        # every server was).
        hup = "SIG_IGN" if nohup else "SIG_DFL"
        launcher = f"import signal; signal.signal(signal.SIGHUP, signal.{hup}){LAUNCHER}"
        self.proc = python_c(launcher, tmp_path, env, self.log_path, self._log)
        self.url = f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while True:
                assert self.proc.poll() is None, self.logs()
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def _place(
    session: aiohttp.ClientSession, url: str, number: str, name: str = "Shutdown Test"
) -> str:
    body = {"phone_number": number, "name": name, "language": "en"}
    async with session.post(f"{url}/calls/outbound", json=body, headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        call_id: str = (await resp.json())["call_id"]
        return call_id


async def _refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


def _check_clean_logs(logs: str) -> None:
    for bad in ("Traceback", "Task was destroyed", "Unclosed", "ERROR", "never retrieved"):
        assert bad not in logs, f"{bad!r} in the server's logs:\n{logs[-3000:]}"


async def test_sigterm_graceful_shutdown_and_restart(
    tmp_path: Path, servers: list[ServerProcess], log_guard: LogGuard, figures: Figures
) -> None:
    log_guard.hide(TOKEN, SECRET)
    log_guard.hide_numbers(*NUMBERS, IN_FLIGHT_NUMBER)
    first = ServerProcess(tmp_path, "first")
    servers.append(first)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await first.wait_ready(session)
        placed = [await _place(session, first.url, number) for number in NUMBERS]
        await asyncio.sleep(1.2)  # the sandbox has posted room/participant webhooks by now
        async with session.get(f"{first.url}/calls/{placed[0]}", headers=HEADERS) as resp:
            before = await resp.json()
        assert before["status"] in ("dialing", "ringing")  # live: its simulation is running

        sent = time.monotonic()
        request = asyncio.create_task(_place(session, first.url, IN_FLIGHT_NUMBER, "In Flight"))
        await asyncio.sleep(0.5)  # its config is written and LiveKit is slowly dialing it
        assert not request.done()
        signalled = time.monotonic()
        # Two signals back to back, and a third once the stop is under way (an impatient
        # operator): each later one broke off the requests in flight with a page of
        # tracebacks; now they are said to be under way, and change nothing.
        first.proc.send_signal(signal.SIGTERM)
        first.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            while not await _refuses_connections(first.port):
                await asyncio.sleep(0.02)
        refused_after = time.monotonic() - signalled
        first.proc.send_signal(signal.SIGTERM)
        in_flight = await request  # answered 200 after the signal, once LiveKit answered
        assert time.monotonic() - sent >= SLOW_DIAL_S

        assert first.proc.wait(timeout=20) == 0
        stopped_in = time.monotonic() - signalled
        logs = first.logs()
        log_guard.scan(logs)
        _check_clean_logs(logs)
        assert "sandbox on port" in logs and "stopped" in logs  # its simulations were ended
        assert "stopping (SIGTERM): no new connections" in logs and "already stopping" in logs
        assert logs.rstrip().endswith("server: stopped"), logs[-500:]
        # Every call was live: had the simulations or the reaper kept running, the process
        # would not have exited before the calls ended (13 s and more).
        assert stopped_in < 10
        # A clean close checkpoints the WAL and removes it; the file is consistent.
        assert not (tmp_path / "calls.db-wal").exists()
        with contextlib.closing(sqlite3.connect(tmp_path / "calls.db")) as db, db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        # Their rooms went with the first server's embedded sandbox: it settled them as it
        # stopped (sandbox_stopped, ended then; they were left live, and settled by the next
        # start dated to their last event), each with the history it wrote; said in its log.
        said = f"stopping with {len(placed) + 1} call(s) live in the embedded sandbox"
        assert said in first.logs()
        second = ServerProcess(tmp_path, "second")
        servers.append(second)
        await second.wait_ready(session)
        async with session.get(f"{second.url}/calls?limit=500", headers=HEADERS) as resp:
            listed = (await resp.json())["calls"]
        assert sorted(c["call_id"] for c in listed) == sorted([*placed, in_flight])
        async with session.get(f"{second.url}/calls/{placed[0]}", headers=HEADERS) as resp:
            after = await resp.json()
        assert after["timeline"][: len(before["timeline"])] == before["timeline"]
        async with session.get(f"{second.url}/calls/{in_flight}", headers=HEADERS) as resp:
            shown = await resp.json()
        # placed by the first (not failed by its shutdown, answered 200), settled at its stop
        events = [e["event"] for e in shown["timeline"]]
        assert {"created", "dialed"} <= set(events) and events[-1] == "sandbox_stopped", events
        assert all(c["status"] in FINAL for c in listed)
        records = json.loads((tmp_path / "config.json").read_text())["calls"]
        assert records == {}
        assert "left live" not in second.logs()  # nothing left for the next start

        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=20) == 0
        log_guard.scan(second.logs())
        _check_clean_logs(second.logs())
    figures.add(
        f"{len(placed)} live calls + 1 request in flight at SIGTERM: new connections refused "
        f"after {refused_after:.2f} s, in-flight answered 200, exit 0 after {stopped_in:.1f} s, "
        "WAL closed, restart read back "
        f"{len(listed)}/{len(placed) + 1} calls, all settled at the stop, and"
        f" {len(records)} config records"
    )


async def test_sighup_stops_the_server_gracefully(
    tmp_path: Path, servers: list[ServerProcess], log_guard: LogGuard
) -> None:
    """A closed terminal or a reload asked of it sends SIGHUP: the server died at once (exit
    129, no stop, calls in flight broken off). It stops as on SIGTERM, and says it does not
    reload its settings."""
    server = ServerProcess(tmp_path, "hup")
    servers.append(server)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await server.wait_ready(session)
        await _place(session, server.url, NUMBERS[0])
    server.proc.send_signal(signal.SIGHUP)
    assert server.proc.wait(timeout=20) == 0
    logs = server.logs()
    log_guard.scan(logs)
    assert "stopping (SIGHUP: settings are not reloaded" in logs
    assert logs.rstrip().endswith("server: stopped"), logs[-500:]


async def test_sighup_leaves_a_server_started_under_nohup_running(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """`nohup` starts a server with SIGHUP ignored so that a closed terminal does not stop it;
    the handler that stops on SIGHUP must not undo that."""
    server = ServerProcess(tmp_path, "nohup", nohup=True)
    servers.append(server)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await server.wait_ready(session)
        server.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert server.proc.poll() is None, server.logs()
        async with session.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200
    assert "stopping" not in server.logs()


@pytest.mark.parametrize("route", ["/calls/outbound", "/campaigns"])
async def test_a_request_still_uploading_at_sigterm_is_answered_503_at_once(
    tmp_path: Path, servers: list[ServerProcess], log_guard: LogGuard, route: str
) -> None:
    """Probe AO: aiohttp reads no byte after the signal, so a request still sending its body
    waited out the whole shutdown timeout (25 s) and its connection closed unanswered. It is
    answered 503 (nothing was done), and the server stops at once."""
    server = ServerProcess(tmp_path, "uploading")
    servers.append(server)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = json.dumps({"phone_number": NUMBERS[0], "name": "Half"}).encode()
    writer.write(
        f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # the handler is reading the body
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        answer = await reader.read()
    writer.close()
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert b"Retry-After: 1" in head and b"Connection: close" in head
    error = json.loads(answer)["error"]
    assert error.startswith("the server is stopping and its request body had not all arrived")
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 8  # not the 25 s shutdown timeout
    logs = server.logs()
    log_guard.scan(logs)
    _check_clean_logs(logs)
    assert "call call-" not in logs  # nothing was placed
