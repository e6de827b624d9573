"""SANDBOX_PORT taken (README's first case: another checkout's server holds 7880). The server
found it only when the app started the sandbox, after it had opened the calls database and
started its customer webhook sender; aiohttp cleans up no start-up that fails, so the
process exited with the database never closed (calls.db-wal and calls.db-shm left in the
checkout after "cannot start") and whatever deliveries its sender had claimed held for
CLAIM_LEASE_S. The port is now tried before anything starts."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_startup import busy_port, run_server, run_server_until
from tests.processes import free_port

__all__ = ["busy_port"]  # the fixture, used by name


def test_a_taken_sandbox_port_stops_start_up_before_the_database_opens(
    tmp_path: Path, busy_port: int
) -> None:
    done = run_server(tmp_path, SANDBOX_PORT=str(busy_port))

    assert done.returncode == 2
    assert (
        f"cannot start: the embedded sandbox cannot listen on 127.0.0.1:{busy_port}: Address"
        " already in use (set SANDBOX_PORT, 0 for any free port, or LIVEKIT_URL for a real"
        " LiveKit)"
    ) in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c.db")) == []


def test_a_free_sandbox_port_is_the_sandboxs_after_the_check(tmp_path: Path) -> None:
    port = free_port()
    done = run_server_until(tmp_path, "SANDBOX MODE", SANDBOX_PORT=str(port))

    assert f"LiveKit stand-in on http://127.0.0.1:{port}," in done.stderr, done.stderr
    assert "cannot" not in done.stderr
