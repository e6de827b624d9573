"""`python server.py` start-up failures: one clear line and exit code 2, never a traceback.

Start-ups that stop before the app is made (a setting refused, HOST:PORT taken) are checked
by `server.main()` in this process (run_server_here) but one; the others, as a process
(run_server)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from common.storage.sqlite import SqliteCallStore
from tests.helpers import immutable
from tests.processes import free_port, reachable_directory, run_to_end

ROOT = Path(__file__).resolve().parents[2]
WHSEC = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAx"  # 30 bytes, base64


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run_server(tmp_path: Path, _prefix: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    environ.update(CONFIG_PATH=str(tmp_path / "config.json"), CALLS_DB_PATH=str(tmp_path / "c.db"))
    # Not 7880 nor 8000, which a `make run` on this machine may hold: the port is bound
    # before start-up, so a taken one would be the error instead of the one under test.
    environ.update(SANDBOX_PORT="0", PORT=str(free_port()))
    environ.update(env)
    argv = [*_prefix.split(), sys.executable, str(ROOT / "server.py")]
    return run_to_end(argv, tmp_path, environ, timeout=30)


def run_server_until(tmp_path: Path, said: str, **env: str) -> subprocess.CompletedProcess[str]:
    """run_server's server, stopped by SIGINT (as `timeout -s INT` did after a fixed 4 s) half
    a second after its stderr says `said` (at most 30 s after its start)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    environ.update(CONFIG_PATH=str(tmp_path / "config.json"), CALLS_DB_PATH=str(tmp_path / "c.db"))
    environ.update(SANDBOX_PORT="0", PORT=str(free_port()))
    environ.update(env)
    argv = [sys.executable, str(ROOT / "server.py")]
    out, err = tmp_path / "server.stdout", tmp_path / "server.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=environ, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                if said in err.read_text(errors="replace"):
                    time.sleep(0.5)  # what the server says right after
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out.read_text(), err.read_text())


def run_server_here(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """What run_server answers for a start-up that stops before the app is made (a setting
    refused, HOST:PORT not to be listened on), from `server.main()` in this process (a
    process start saved): the same environment and working directory, the exit code of its
    SystemExit, its stdout and stderr (log lines included: the root logger as in a fresh
    process, without handlers, WARNING). The environment, working directory, root logger,
    warning filters and open files limit are restored after; getting as far as making the
    app fails the test instead of serving in it."""
    import resource
    import warnings

    import server

    def no_app(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"server.main() with {env} got as far as making its app")

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    environ.update(CONFIG_PATH=str(tmp_path / "config.json"), CALLS_DB_PATH=str(tmp_path / "c.db"))
    environ.update(SANDBOX_PORT="0", PORT=str(free_port()))
    environ.update(env)
    root = logging.getLogger()
    saved_environ, saved_handlers, saved_level = dict(os.environ), root.handlers[:], root.level
    saved_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(environ)
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    try:
        with (
            mock.patch.object(server, "create_app", no_app),
            warnings.catch_warnings(),
            contextlib.chdir(tmp_path),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            pytest.raises(SystemExit) as exited,
        ):
            server.main()
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        resource.setrlimit(resource.RLIMIT_NOFILE, saved_limit)
    assert isinstance(exited.value.code, int), exited.value.code
    argv = [sys.executable, str(ROOT / "server.py")]
    return subprocess.CompletedProcess(
        argv, exited.value.code, stdout.getvalue(), stderr.getvalue()
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "abc"}, "configuration error: PORT must be an integer, got 'abc'"),
        ({"HOST": "0.0.0.0"}, "CALLS_API_TOKEN must be set to listen on HOST=0.0.0.0"),  # noqa: S104
        ({"LIVEKIT_URL": "wss://example.invalid"}, "LIVEKIT_API_KEY must be set"),
        (
            {"CALLS_WEBHOOK_URL": "https://hooks.acme-corp.com/calls"},
            "CALLS_WEBHOOK_SECRET must be set when CALLS_WEBHOOK_URL is set",
        ),
        ({"CALLS_WEBHOOK_SECRET": "hunter2"}, "CALLS_WEBHOOK_SECRET must start with 'whsec_'"),
        (
            {"CALLS_WEBHOOK_URL": "http://10.0.0.7/calls", "CALLS_WEBHOOK_SECRET": WHSEC},
            "CALLS_WEBHOOK_URL: URL scheme must be https",
        ),
        (  # no punycode: reading its host for the DNS check was a traceback
            {"CALLS_WEBHOOK_URL": "https://xn--a.com/calls", "CALLS_WEBHOOK_SECRET": WHSEC},
            "CALLS_WEBHOOK_URL: invalid host name: 'xn--a.com'",
        ),
        (  # the same in LIVEKIT_URL: its plain-ws warning read the host, a traceback
            {"LIVEKIT_URL": "ws://xn--a.example", "LIVEKIT_API_KEY": "APIx"},
            "LIVEKIT_URL names no valid host name",
        ),
        (
            {"CALLS_API_TOKEN_PREVIOUS": "old-token-0123456789"},
            "CALLS_API_TOKEN_PREVIOUS is set but CALLS_API_TOKEN is not",
        ),
        (
            {
                "CALLS_API_TOKEN": "new-token-0123456789",
                "CALLS_API_TOKEN_PREVIOUS": "new-token-0123456789",
            },
            "CALLS_API_TOKEN_PREVIOUS is CALLS_API_TOKEN itself",
        ),
    ],
)
def test_bad_settings_stop_start_up(tmp_path: Path, env: dict[str, str], message: str) -> None:
    # One in a process of its own (the exit code and stderr a supervisor sees), the rest here.
    done = (run_server if env == {"PORT": "abc"} else run_server_here)(tmp_path, **env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_sandbox_port_in_use(tmp_path: Path, busy_port: int) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = run_server(tmp_path, PORT=str(port), SANDBOX_PORT=str(busy_port))
    assert done.returncode == 2
    assert (
        f"the embedded sandbox cannot listen on 127.0.0.1:{busy_port}: Address already in use"
        " (set SANDBOX_PORT, 0 for any free port, or LIVEKIT_URL for a real LiveKit)"
    ) in done.stderr  # not asyncio's "error while attempting to bind on address (...)"
    assert "Traceback" not in done.stderr


def test_http_port_in_use(tmp_path: Path, busy_port: int) -> None:
    done = run_server_here(tmp_path, PORT=str(busy_port), SANDBOX_PORT="0")
    assert done.returncode == 2
    # The next port, not a fixed 8001: that named the port taken to a server started on 8001.
    assert (
        f"cannot listen on 127.0.0.1:{busy_port}: Address already in use (set HOST/PORT:"
        f" from another checkout, PORT={busy_port + 1} SANDBOX_PORT=0 make run runs beside it)"
    ) in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_database_stops_start_up_with_its_password_masked(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing will listen there
    url = f"postgresql://caller:s3cret-pw@127.0.0.1:{port}/calls"
    done = run_server(tmp_path, DATABASE_URL=url)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1
    assert f"cannot connect to postgresql://caller:***@127.0.0.1:{port}/calls" in lines[0]
    assert "s3cret-pw" not in done.stderr and "Traceback" not in done.stderr


def test_a_short_livekit_secret_is_warned_of_in_the_log_alone(tmp_path: Path) -> None:
    """`livekit-server --dev`'s secret (`secret`) started with the server's own WARNING, then
    PyJWT's InsecureKeyLengthWarning as raw stderr lines (the warning and a source line) in
    the middle of the log, at the first token signed (probe BB)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing will listen there: start-up only warns
    done = run_server_until(
        tmp_path,
        "did not answer as it should at start-up",
        LIVEKIT_URL=f"http://127.0.0.1:{port}",
        LIVEKIT_API_KEY="devkey",
        LIVEKIT_API_SECRET="secret",
        SIP_OUTBOUND_TRUNK_ID="ST_dev",
    )
    assert "LIVEKIT_API_SECRET is 6 characters" in done.stderr, done.stderr
    assert "did not answer as it should at start-up" in done.stderr  # a token was signed
    assert "InsecureKeyLengthWarning" not in done.stderr, done.stderr
    assert "server: stopped" in done.stderr


def test_an_unreachable_livekit_is_said_once_in_one_plain_line(tmp_path: Path) -> None:
    """The start-up line said the probe twice: "did not answer as it should at start-up
    (LiveKit did not answer the readiness probe: readiness probe: LiveKit unreachable
    (ClientConnectorError))"."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing will listen there: start-up only warns
    done = run_server_until(
        tmp_path,
        "did not answer as it should at start-up",
        LIVEKIT_URL=f"http://127.0.0.1:{port}",
        LIVEKIT_API_KEY="APIlocal",
        LIVEKIT_API_SECRET="local-secret-0123456789abcdef0123456789",
        SIP_OUTBOUND_TRUNK_ID="ST_local",
    )
    (line,) = [line for line in done.stderr.splitlines() if "did not answer as it" in line]
    assert line.endswith(
        f"LiveKit at http://127.0.0.1:{port} did not answer as it should at start-up"
        " (readiness probe: LiveKit unreachable (connection refused: nothing listens on its"
        " port)): calls fail until it does; check LIVEKIT_URL, LIVEKIT_API_KEY and"
        " LIVEKIT_API_SECRET"
    ), line


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--help"], 0, "usage: python server.py"),
        (["--port", "8001"], 2, "server.py takes no arguments (got --port): settings come"),
        (["--api-secret=s3cret-value"], 2, "server.py takes no arguments (got --api-secret):"),
    ],
)
def test_arguments_are_not_taken_silently(
    tmp_path: Path, args: list[str], code: int, said: str
) -> None:
    """`python server.py --port 8001` started on PORT all the same (8000), the option
    unread, and `python server.py --help` started a server: settings are the environment's
    and .env's alone, and arguments now say so, in one line, without their values."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    environ.update(CONFIG_PATH=str(tmp_path / "config.json"), CALLS_DB_PATH=str(tmp_path / "c.db"))
    environ.update(SANDBOX_PORT="0", PORT=str(free_port()))
    argv = [sys.executable, str(ROOT / "server.py"), *args]
    done = run_to_end(argv, tmp_path, environ, timeout=30)
    assert done.returncode == code, done.stderr
    assert said in done.stdout + done.stderr
    assert "s3cret-value" not in done.stdout + done.stderr
    assert "starting on" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "c.db").exists()  # nothing was started


def test_a_malformed_database_url_is_a_configuration_error(tmp_path: Path) -> None:
    done = run_server_here(tmp_path, DATABASE_URL="mysql://x@y/z")
    assert done.returncode == 2
    assert "DATABASE_URL must start with postgresql:// (or postgres://)" in done.stderr
    assert "x@y" not in done.stderr  # the value (it may hold a password) is not echoed


def test_the_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """With the common soft limit (here 256 under a hard 4096), a thousand connections were
    enough to make every accept and config write fail."""
    import resource

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    probe = (
        "import logging, resource, server; logging.basicConfig(level=logging.INFO);"
        " server.raise_open_files_limit(); print(resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        preexec_fn=low_soft_limit,  # only sets a limit in the child
    )
    assert done.stdout.strip() == "(4096, 4096)"
    assert "open files limit raised from 256 to 4096" in done.stderr


def test_start_up_failures_are_said_even_at_log_level_critical(
    tmp_path: Path, busy_port: int
) -> None:
    done = run_server_here(tmp_path, PORT=str(busy_port), LOG_LEVEL="CRITICAL")
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{busy_port}" in done.stderr  # it was exit 2, silent
    done = run_server(tmp_path, CALLS_DB_PATH="/proc/nope/calls.db", LOG_LEVEL="CRITICAL")
    assert done.returncode == 2
    assert "the calls database (CALLS_DB_PATH=/proc/nope/calls.db) cannot be used" in done.stderr
    assert "set CALLS_DB_PATH" in done.stderr and "Traceback" not in done.stderr


def test_a_database_that_takes_no_write_stops_start_up(tmp_path: Path) -> None:
    """A calls.db whose file is read-only (its directory writable) opened, and the server
    served /healthz while every call got 503. Root ignores file modes, so the server runs
    without that capability here, as a service user would."""
    db = tmp_path / "c.db"

    async def migrate() -> None:
        await (await SqliteCallStore.open(db)).close()

    asyncio.run(migrate())
    db.chmod(0o444)
    done = run_server(
        tmp_path,
        PORT=str(free_port()),
        SANDBOX_PORT="0",
        _prefix="setpriv --inh-caps=-all --bounding-set=-dac_override,-dac_read_search",
    )
    assert done.returncode == 2, done.stderr
    assert f"the calls database (CALLS_DB_PATH={db}) cannot be used" in done.stderr
    # SQLite's "attempt to write a readonly database" named neither the file nor the cause
    me = pwd.getpwuid(os.geteuid()).pw_name  # root in CI, the developer on a laptop
    assert f"c.db is this user's ({me}), but its mode (0444)" in done.stderr, done.stderr
    assert "chmod u+rw c.db" in done.stderr and "Traceback" not in done.stderr


def test_a_database_url_that_does_not_parse_never_shows_its_password(tmp_path: Path) -> None:
    # A `/` in the password ends the host for the URL parser; the rest is a "port".
    done = run_server(tmp_path, DATABASE_URL="postgresql://app:Sup3rS3cret/xyz@db.internal/calls")
    assert done.returncode == 2, done.stderr
    assert "DATABASE_URL does not parse" in done.stderr
    assert "S3cret" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sslmode=required", "`sslmode` parameter must be one of: disable, allow, prefer, require"),
        ("target_session_attrs=primary-only", "target_session_attrs is expected to be one of"),
    ],
)
def test_a_database_url_parameter_asyncpg_refuses_is_named(
    tmp_path: Path, query: str, says: str
) -> None:
    """`?sslmode=required` (libpq's is `require`) was said to "not parse", and to
    percent-encode the user name and password, which were fine."""
    done = run_server(
        tmp_path, DATABASE_URL=f"postgresql://app:Sup3rS3cret@127.0.0.1:1/calls?{query}"
    )
    assert done.returncode == 2, done.stderr
    assert (
        "the calls database (DATABASE_URL) cannot be used:"
        f" postgresql://app:***@127.0.0.1:1/calls?{query} is refused: {says}" in done.stderr
    )
    assert "does not parse" not in done.stderr
    assert "S3cret" not in done.stderr and "Traceback" not in done.stderr


def test_a_refusal_quoting_a_secret_of_the_url_is_not_shown() -> None:
    from asyncpg import ClientConfigurationError

    from common.storage.postgres import _refused

    dsn = "postgresql://app@db/calls?sslpassword=S3cret&sslmode=x"
    refused = _refused(dsn, ClientConfigurationError("cannot use key with S3cret"))
    assert "S3cret" not in refused and "does not parse" in refused


def test_a_database_url_with_a_port_past_65535_stops_start_up_in_one_line(
    tmp_path: Path,
) -> None:
    """asyncpg takes port 99999 and passes it to connect(): start-up ended in a traceback."""
    done = run_server(tmp_path, DATABASE_URL="postgresql://app:Sup3rS3cret@127.0.0.1:99999/calls")
    assert done.returncode == 2, done.stderr
    assert (
        "the calls database (DATABASE_URL) cannot be used: cannot connect to"
        " postgresql://app:***@127.0.0.1:99999/calls: a port in it is past 65535" in done.stderr
    )
    assert "S3cret" not in done.stderr and "Traceback" not in done.stderr


def test_a_config_path_that_cannot_be_written_stops_start_up(tmp_path: Path) -> None:
    """Its directory could not be created (under /proc): the server started, and every call
    failed with 503."""
    done = run_server(tmp_path, CONFIG_PATH="/proc/self/nope/config.json", SANDBOX_PORT="0")
    assert done.returncode == 2, done.stderr
    assert "config.json (/proc/self/nope/config.json) cannot be written" in done.stderr
    assert "set CONFIG_PATH" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "c.db").exists()  # probe AO: a new, empty calls.db was left


def test_a_config_json_that_cannot_be_replaced_stops_start_up(tmp_path: Path) -> None:
    """Made immutable (`chattr +i`; a file bind-mounted into a container alike): its
    directory took the probe's file, so the server started, said it was ready, and failed
    every call with 503. Now start-up writes a config.json that is there, and stops."""
    config = tmp_path / "config.json"
    config.write_text('{"calls": {}}\n')
    with immutable(config):
        done = run_server(tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        f"config.json ({config}) cannot be written: a write of it fails: Operation not"
        " permitted (set CONFIG_PATH)" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert config.read_text() == '{"calls": {}}\n'


@pytest.mark.parametrize("kind", ["a directory", "a device"])
def test_a_config_path_that_is_not_a_file_stops_start_up(tmp_path: Path, kind: str) -> None:
    """A directory failed every call; a device was moved aside and replaced (as root with
    /dev/null, the system's own)."""
    if kind == "a directory":
        path = tmp_path / "adir"
        path.mkdir()
    else:
        path = Path("/dev/null")
    done = run_server(tmp_path, CONFIG_PATH=str(path), SANDBOX_PORT="0")
    assert done.returncode == 2, done.stderr
    assert (
        f"config.json ({path}) cannot be written: not a regular file (a directory, a device,"
        " a FIFO or a socket)" in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert Path("/dev/null").is_char_device()


def test_the_port_is_taken_before_start_up() -> None:
    """A second process on a served HOST:PORT fails before running anything; a restart (its
    old connections in TIME_WAIT) takes the port again."""
    import server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sockets = server.listening_sockets("127.0.0.1", port)
    try:
        with pytest.raises(OSError):
            server.listening_sockets("127.0.0.1", port)  # taken
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = sockets[0].accept()  # the server side closes first: TIME_WAIT
            accepted.close()
    finally:
        for sock in sockets:
            sock.close()
    for sock in server.listening_sockets("127.0.0.1", port):
        sock.close()


def test_addresses_this_machine_cannot_bind_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """`localhost` naming ::1 where IPv6 is off (or ::1 not assigned, in a container): asyncio
    skipped that address and served on 127.0.0.1; so do we. None bindable: the error."""
    import errno

    import server

    real_socket = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args)

    monkeypatch.setattr(socket, "socket", no_ipv6)
    with real_socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *_a, **_k: [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ],
    )
    sockets = server.listening_sockets("localhost", port)
    assert [sock.getsockname() for sock in sockets] == [("127.0.0.1", port)]
    for sock in sockets:
        sock.close()
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *_a, **_k: [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
        ],
    )
    with pytest.raises(OSError, match="not supported"):
        server.listening_sockets("localhost", port)


def test_an_address_not_this_machines_is_said_with_host_and_port(tmp_path: Path) -> None:
    done = run_server_here(tmp_path, HOST="192.0.2.1", CALLS_API_TOKEN="t" * 32, PORT="8123")
    assert done.returncode == 2
    assert "cannot listen on 192.0.2.1:8123" in done.stderr and "set HOST/PORT)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_password_in_the_database_urls_query_is_masked(tmp_path: Path) -> None:
    """libpq's `?password=` (and `sslpassword=`) form was printed in clear."""
    port = free_port()  # nothing listens there
    url = f"postgresql://calls@127.0.0.1:{port}/postgres?password=TopSecret9&sslpassword=KeyPw7"
    done = run_server(tmp_path, DATABASE_URL=url)
    assert done.returncode == 2
    shown = f"postgresql://calls@127.0.0.1:{port}/postgres?password=***&sslpassword=***"
    assert f"cannot connect to {shown}" in done.stderr
    assert "TopSecret9" not in done.stderr and "KeyPw7" not in done.stderr


@pytest.mark.parametrize(
    ("name", "value"), [("CONFIG_PATH", "/"), ("CONFIG_PATH", "."), ("CALLS_DB_PATH", "/")]
)
def test_a_directory_for_a_file_setting_is_one_configuration_error(
    tmp_path: Path, name: str, value: str
) -> None:
    """CONFIG_PATH=/ or . was a 17-line traceback (`PosixPath('/') has an empty name`), in the
    middle of LOG_FORMAT=json's lines too."""
    done = run_server_here(tmp_path, LOG_FORMAT="json", **{name: value})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"configuration error: {name} must be a file's path, not a directory's, got {value!r}"
    ]


def test_an_in_memory_database_is_a_configuration_error(tmp_path: Path) -> None:
    """CALLS_DB_PATH=:memory: opened SQLite's in-memory database, then stopped start-up with
    `cannot start: [Errno 2] No such file or directory: ':memory:'`, naming no setting."""
    done = run_server_here(tmp_path, CALLS_DB_PATH=":memory:")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "configuration error: CALLS_DB_PATH must be a file's path, got ':memory:' (SQLite's"
        " in-memory database or a URI: the calls would not outlive the server)"
    ]


@pytest.mark.parametrize("kind", ["a directory", "a device"])
def test_a_calls_db_path_that_is_not_a_file_names_the_setting(tmp_path: Path, kind: str) -> None:
    """SQLite said only `unable to open database file` (a directory) or `disk I/O error`
    (/dev/null), on two lines."""
    if kind == "a directory":
        path = tmp_path / "adir"
        path.mkdir()
    else:
        path = Path("/dev/null")
    done = run_server(tmp_path, CALLS_DB_PATH=str(path))
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert line.endswith(
        f"cannot start: the calls database (CALLS_DB_PATH={path}) cannot be used: not a regular"
        " file (a directory, a device, a FIFO or a socket) (set CALLS_DB_PATH to a file this"
        " server can create and write)"
    )


def test_a_dotenv_line_that_does_not_parse_is_one_configuration_error(tmp_path: Path) -> None:
    """The server started without the line (and the ones an unclosed quote ran on into):
    here calls to every country were allowed."""
    (tmp_path / ".env").write_text('CALLS_ALLOWED_COUNTRIES="US\nCALLS_MAX_ACTIVE=5\n')
    done = run_server_here(tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "configuration error: .env line 1 (CALLS_ALLOWED_COUNTRIES) cannot be parsed (an"
        " unclosed quote, or not NAME=value); fix or remove it"
    ]


def test_a_dotenv_line_that_does_not_parse_is_one_line_in_a_checkout_others_may_read() -> None:
    """`cp .env.example .env` in a checkout others may pass through (a 0644 .env under
    /srv or /home): the check for secrets every user may read parsed the file again with
    python-dotenv, which printed its own `python-dotenv could not parse statement starting
    at line 1` on stderr before the configuration error, a second line naming no variable."""
    with reachable_directory() as here:
        (here / ".env").write_text('CALLS_ALLOWED_COUNTRIES="US\nCALLS_MAX_ACTIVE=5\n')
        (here / ".env").chmod(0o644)
        done = run_server_here(here)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "configuration error: .env line 1 (CALLS_ALLOWED_COUNTRIES) cannot be parsed (an"
        " unclosed quote, or not NAME=value); fix or remove it"
    ]


def test_a_dotenv_mistake_is_said_before_the_configuration_error_it_explains(
    tmp_path: Path,
) -> None:
    """A setting misspelt in .env is read as unset, and the error that follows names the
    setting as missing: the warning naming the misspelt line was logged only once start-up
    went on, so it was never said when it was the cause (the agent says it first)."""
    secret_line = f"CALLS_WEBHOOK_SECRT={WHSEC}"
    (tmp_path / ".env").write_text(
        f"CALLS_WEBHOOK_URL=https://hooks.acme-corp.com/calls\n{secret_line}\n"
    )
    (tmp_path / ".env").chmod(0o600)
    done = run_server_here(tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "warning: CALLS_WEBHOOK_SECRT (.env line 2) is no setting of this server: did you mean"
        " CALLS_WEBHOOK_SECRET? (it is read as unset)",
        "configuration error: CALLS_WEBHOOK_SECRET must be set when CALLS_WEBHOOK_URL is set"
        " (whsec_ + base64 of at least 24 random bytes); " + MAKE_WHSEC,
    ]
    assert WHSEC not in done.stderr  # never a value


MAKE_WHSEC = (
    "make one with: python -c 'import base64, os;"
    ' print("whsec_" + base64.b64encode(os.urandom(32)).decode())\''
)


@pytest.mark.parametrize("value", ["hunter2", "whsec_c2VjcmV0", "whsec_!!!!", f"{WHSEC},old"])
def test_a_malformed_webhook_secret_says_how_to_make_one(tmp_path: Path, value: str) -> None:
    """'CALLS_WEBHOOK_SECRET must decode to at least 24 bytes, got 6' named a format, not the
    command that makes a secret of it (CALLS_API_TOKEN's error names its own); the command it
    names now makes one that start-up takes."""
    done = run_server_here(tmp_path, CALLS_WEBHOOK_SECRET=value)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("configuration error: CALLS_WEBHOOK_SECRET")
    assert line.endswith("; " + MAKE_WHSEC)
    command = MAKE_WHSEC.removeprefix("make one with: python -c ").strip("'")
    made = subprocess.run(  # noqa: S603 - the command the error names
        [sys.executable, "-c", command], capture_output=True, text=True, check=True
    ).stdout.strip()
    from common.notify.signing import parse_secrets

    assert parse_secrets(made) == made


def test_the_start_line_writes_an_ipv6_host_as_a_url_does(tmp_path: Path) -> None:
    """`starting on http://::1:8000` was no URL (a browser or curl took it apart wrongly)."""
    port = free_port()
    done = run_server(tmp_path, HOST="::1", PORT=str(port), CALLS_DB_PATH="/dev/null")
    assert done.returncode == 2, done.stderr  # stopped by the database, after the line
    assert f"starting on http://[::1]:{port} (webhooks at /webhooks/livekit)" in done.stderr


def test_the_start_says_which_env_database_and_config_it_uses(tmp_path: Path) -> None:
    """A server started from another directory found no .env and made a new calls.db there;
    nothing said so. Mistakes in a .env that parses are warned, without their values."""
    done = run_server(tmp_path, CALLS_DB_PATH="/dev/null")
    assert done.returncode == 2, done.stderr  # stopped by the database, after the lines
    assert (
        f"settings: .env none in {tmp_path}; calls database /dev/null; config"
        f" {tmp_path / 'config.json'}" in done.stderr
    )
    (tmp_path / ".env").write_text("CALLS_MAX_ACTIV=9\nSANDBOX_PORT=0\nSANDBOX_PORT=0\n")
    done = run_server(tmp_path, CALLS_DB_PATH="/dev/null")
    assert f"settings: .env {tmp_path / '.env'};" in done.stderr
    assert "CALLS_MAX_ACTIV (.env line 1) is no setting of this server: did you mean" in done.stderr
    assert "SANDBOX_PORT is set on .env lines 2, 3" in done.stderr


@pytest.mark.parametrize("setting", ["CONFIG_PATH", "CALLS_DB_PATH"])
def test_a_link_loop_for_a_file_setting_is_one_line_not_a_traceback(
    tmp_path: Path, setting: str
) -> None:
    """Path.resolve() raises on a link loop: the check that the two settings name two files
    ended start-up in a RuntimeError traceback."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    done = run_server(tmp_path, **{setting: str(tmp_path / "loop")})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "cannot start" in line]) == 1


def test_a_database_a_newer_release_migrated_says_how_to_roll_back(tmp_path: Path) -> None:
    """A rollback onto a database the newer release had migrated was told to "set
    CALLS_DB_PATH to a file this server can create": a new, empty database, without the
    do-not-call list, the campaigns and the idempotency keys."""
    import sqlite3

    from common.storage.sqlite import SCHEMA_VERSION

    path = tmp_path / "c.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    done = run_server(tmp_path)
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert line.endswith(
        f"cannot start: the calls database cannot be used: {path} has schema version"
        f" {SCHEMA_VERSION + 1}, newer than this code ({SCHEMA_VERSION}): run the release that"
        " migrated it, or restore the copy taken before the upgrade (another, empty database"
        " would hold no do-not-call list, no campaigns and no idempotency keys)"
    )
    assert "set CALLS_DB_PATH" not in done.stderr


def test_a_database_locked_by_another_process_names_it_not_the_setting(tmp_path: Path) -> None:
    """calls.db locked by another process at start-up (another server on the same file, a
    `sqlite3` shell inside BEGIN, a backup tool) said 'cannot be used: database is locked (set
    CALLS_DB_PATH to a file this server can create and write)': the file was fine, and
    another one would hold none of its calls, do-not-call list or idempotency keys."""
    import sqlite3

    path = tmp_path / "c.db"

    async def migrate() -> None:
        await (await SqliteCallStore.open(path)).close()

    asyncio.run(migrate())
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        done = run_server(tmp_path)
        other.execute("ROLLBACK")
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert f"(CALLS_DB_PATH={path}) cannot be used: it is locked by pid {os.getpid()}" in line
    assert "set CALLS_DB_PATH" not in line and "Traceback" not in done.stderr


def test_the_server_collects_its_young_garbage_a_tenth_as_often(tmp_path: Path) -> None:
    """At Python's default (700) the young generation was collected every millisecond or so
    under load, most of a request's objects lived through two or three collections and were
    traversed again in the older ones: ~8% of the server's CPU per call."""
    import gc

    from aiohttp import web

    import server

    seen: list[tuple[int, ...]] = []

    class Served(Exception):
        """Out of main() at once: what follows a server's stop (its threads joined, an exit
        if one is held) would act on this test process."""

    def serve(_app: web.Application, **kwargs: Any) -> None:
        seen.append(gc.get_threshold())
        for sock in kwargs["sock"]:
            sock.close()
        raise Served

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    environ.update(CONFIG_PATH=str(tmp_path / "config.json"), CALLS_DB_PATH=str(tmp_path / "c.db"))
    environ.update(SANDBOX_PORT="0", PORT=str(free_port()), LOG_LEVEL="WARNING")
    saved_threshold, root = gc.get_threshold(), logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        with (
            mock.patch.dict(os.environ, environ, clear=True),
            mock.patch.object(server, "create_app", lambda _settings: web.Application()),
            mock.patch.object(web, "run_app", serve),
            mock.patch.object(server, "raise_open_files_limit", lambda: None),
            contextlib.chdir(tmp_path),
            pytest.raises(Served),
        ):
            server.main()
    finally:
        gc.set_threshold(*saved_threshold)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert seen and seen[0][0] >= 10 * 700, seen
