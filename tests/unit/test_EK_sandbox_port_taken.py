"""`python -m sandbox` on a port in use says it as the server does ("Address already in use"),
not asyncio's "error while attempting to bind on address ('127.0.0.1', 7880): address already
in use", the address twice on one line; and what to do: another --host/--port, 0 for any."""

from __future__ import annotations

from tests.processes import run_on_a_taken_port
from tests.unit.test_sandbox_cli import run


def test_a_port_in_use_says_why_once() -> None:
    port, done = run_on_a_taken_port(run)

    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use (" in done.stderr
    assert "--port 0 takes any free port)\n" in done.stderr  # what to do about it
    assert "error while attempting to bind" not in done.stderr
