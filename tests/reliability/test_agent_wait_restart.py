"""A server restarted while it waited for a call's agent (AGENT_JOIN_TIMEOUT_S): the wait
was a timer in the process that died. The call, no agent in its room, must still be ended
as one no agent joined, not left to its callee (who hears silence) and then read
`completed`.

Real processes: a standalone sandbox (`python -m sandbox`, standing for a real LiveKit:
its rooms outlive the server) and the server (`server.main()`), killed and started again
on the same port and database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import wait_for
from tests.processes import SandboxProcess, ServerProcess, free_port

KEY = "APIagentwaitrestart"
SECRET = "agent-wait-restart-livekit-secret-0123456789ab"
FINAL = {"completed", "busy", "no_answer", "failed", "voicemail", "canceled"}


def env(tmp: Path, sandbox_url: str) -> dict[str, str]:
    return {
        "CALLS_DB_PATH": str(tmp / "calls.db"),
        "CONFIG_PATH": str(tmp / "config.json"),
        "LIVEKIT_URL": sandbox_url,
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "SIP_OUTBOUND_TRUNK_ID": "ST_restart",
        "CALLS_SETTLE_GRACE_S": "0.2",
        "REAPER_INTERVAL_S": "0.3",
        "AGENT_JOIN_TIMEOUT_S": "1",
    }


async def test_a_call_no_agent_came_to_is_ended_after_its_servers_restart(
    tmp_path: Path, processes: list[Any]
) -> None:
    port = free_port()
    async with aiohttp.ClientSession() as session:
        # the callee answers after 0.4 s and waits 12 s in silence, then hangs up: long
        # enough for the second server to start on a loaded machine (3.5 s seen) and check
        sandbox = SandboxProcess(
            tmp_path,
            f"http://127.0.0.1:{port}/webhooks/livekit",
            api_key=KEY,
            api_secret=SECRET,
            time_scale=0.2,
        )
        processes.append(sandbox)
        await sandbox.wait_ready(session)
        first = ServerProcess(tmp_path, "first", env(tmp_path, sandbox.url), port=port)
        processes.append(first)
        await first.wait_ready(session)
        body = {"phone_number": "+14155550404", "name": "Nobody", "language": "en"}
        async with session.post(f"{first.url}/calls/outbound", json=body) as resp:
            assert resp.status == 200, await resp.text()
            call_id = (await resp.json())["call_id"]
        first.kill()  # before AGENT_JOIN_TIMEOUT_S passed: its wait dies with it
        second = ServerProcess(tmp_path, "second", env(tmp_path, sandbox.url), port=port)
        processes.append(second)
        await second.wait_ready(session)

        async def final() -> bool:
            async with session.get(f"{second.url}/calls/{call_id}") as resp:
                return (await resp.json())["status"] in FINAL

        await wait_for(final, timeout=30)
        async with session.get(f"{second.url}/calls/{call_id}") as resp:
            call = await resp.json()
    assert call["status"] == "failed", (call["status"], call["reason"], second.logs())
    assert call["reason"].startswith("no agent joined the call within 1 s of its dial")
    assert call["ended_by"] == "system"
    ended = [e for e in call["timeline"] if e["to"] in FINAL]
    assert len(ended) == 1, call["timeline"]


async def test_a_call_whose_agent_died_is_ended_after_its_servers_restart(
    tmp_path: Path, processes: list[Any]
) -> None:
    """The call's agent died (0666: its participant left, the room stayed, the callee on the
    line in silence) and the server that got its participant_left was killed within the 5 s
    it waits for an agent to come back: the wait died with it, and the call stayed live until
    the callee hung up (here 30 s; up to max_duration_s), then read `completed` as if the
    agent had talked. The next server takes the wait up from the call's timeline."""
    port = free_port()
    async with aiohttp.ClientSession() as session:
        # answered after 1.5 s, the agent dies 1.5 s later, the callee waits 30 s in silence
        sandbox = SandboxProcess(
            tmp_path,
            f"http://127.0.0.1:{port}/webhooks/livekit",
            api_key=KEY,
            api_secret=SECRET,
            time_scale=0.5,
        )
        processes.append(sandbox)
        await sandbox.wait_ready(session)
        first = ServerProcess(tmp_path, "first", env(tmp_path, sandbox.url), port=port)
        processes.append(first)
        await first.wait_ready(session)
        body = {"phone_number": "+14155550666", "name": "Nobody", "language": "en"}
        async with session.post(f"{first.url}/calls/outbound", json=body) as resp:
            assert resp.status == 200, await resp.text()
            call_id = (await resp.json())["call_id"]

        async def agent_left() -> bool:
            async with session.get(f"{first.url}/calls/{call_id}") as resp:
                timeline = (await resp.json())["timeline"]
            return any(e["event"] == "participant_left" for e in timeline)  # the agent's

        await wait_for(agent_left, timeout=10)
        first.kill()  # within the 5 s it waits for an agent to come back
        second = ServerProcess(tmp_path, "second", env(tmp_path, sandbox.url), port=port)
        processes.append(second)
        await second.wait_ready(session)

        async def final() -> bool:
            async with session.get(f"{second.url}/calls/{call_id}") as resp:
                return (await resp.json())["status"] in FINAL

        await wait_for(final, timeout=45)  # the callee hangs up 30 s after the answer
        async with session.get(f"{second.url}/calls/{call_id}") as resp:
            call = await resp.json()
    assert (call["status"], call["reason"], call["ended_by"]) == (
        "completed",
        "its agent left the call (its process ended without ending the call)",
        "system",
    ), second.logs()
    # ended by the next server within seconds, not by the callee's hang-up
    assert call["talk_s"] < 20, call["talk_s"]
