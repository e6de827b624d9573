"""`python -m agent start` with AGENT_HTTP_HOST set to an address that is not this host's (a
typo, another machine's: 192.0.2.1) or a name that does not resolve: its one line asked "is
another agent worker running on this host?", the hint for a port taken, and sent the
operator looking for a worker that was not there. Found starting the worker with
AGENT_HTTP_HOST=10.9.9.9 and =nonexistent.invalid. Now only a port taken says so; any other
failure says to set AGENT_HTTP_HOST to an address of this host."""

from __future__ import annotations

from agent.cli import health_port_problem


def test_an_address_not_of_this_host_is_not_blamed_on_another_worker() -> None:
    host = "192.0.2.1"  # TEST-NET-1: on no host; the bind fails here, nothing is sent
    problem = health_port_problem(host, 8081)
    assert problem is not None
    assert problem.startswith(f"cannot listen on {host}:8081 (the worker's health/status server)")
    assert "another agent worker" not in problem, problem
    assert problem.endswith(
        "set AGENT_HTTP_HOST to an address of this host (127.0.0.1, or 0.0.0.0 for every one),"
        " or a name that resolves to one"
    ), problem
