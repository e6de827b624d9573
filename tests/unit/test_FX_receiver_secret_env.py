"""README's local receiver takes the signing secret from CALLS_WEBHOOK_SECRET, not from its
command line: README ran `python -m sandbox.receiver --secret $SECRET`, and every user of the
machine read the secret in `ps` (/proc/<pid>/cmdline is world-readable), enough to sign
webhooks the receiver takes as the server's. `--secret` still works."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from common.notify.signing import sign
from tests.processes import free_port, run_to_end

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"r" * 32).decode()
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}


async def test_the_secret_from_the_environment_verifies_and_stays_off_the_command_line() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.receiver", "--port", str(port)],
        cwd=ROOT,
        env={**ENV, "CALLS_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = json.dumps({"type": "call.ended", "data": {"call_id": "call-1"}}).encode()
        headers = sign(SECRET, "msg_call-1_1", datetime.now(UTC), body)
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.post(
                        f"http://127.0.0.1:{port}/", data=body, headers=headers
                    ) as resp:
                        status = resp.status
                    break
                except aiohttp.ClientConnectionError:
                    assert proc.poll() is None, proc.communicate()
                    await asyncio.sleep(0.05)
        assert status == 204
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline
        assert SECRET.removeprefix("whsec_").encode() not in cmdline
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert "msg_call-1_1 call.ended call-1" in out, (out, err)


def test_without_either_it_says_what_to_set() -> None:
    done = run_to_end([sys.executable, "-m", "sandbox.receiver"], ROOT, ENV, 30)
    assert done.returncode == 2
    assert "set CALLS_WEBHOOK_SECRET (the server's), or give --secret" in done.stderr
