"""PostgreSQL as an operator runs it: a role with its own settings, servers started together.

A server started while another migrates waits for that migration (the advisory lock), however
long it takes, whatever statement_timeout the role has, and never fails with a bare error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from common.calls.models import NewCall
from common.storage import postgres as postgres_module
from common.storage.base import DatabaseError
from common.storage.postgres import MIGRATION_LOCK, SCHEMA_VERSION, PostgresCallStore, masked
from tests.pg_cluster import PostgresCluster
from tests.processes import ROOT, free_port, run_to_end

ROLE = "ei_operator"


@pytest.fixture
def role_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A database owned by a role whose DBA set a short statement_timeout on it (as many do
    against runaway queries)."""
    postgres_cluster.start()
    postgres_cluster.drop_database(ROLE)
    postgres_cluster._admin(f"DROP ROLE IF EXISTS {ROLE}")
    postgres_cluster._admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD 'pw'")
    postgres_cluster._admin(f"ALTER ROLE {ROLE} SET statement_timeout = '100ms'")
    postgres_cluster._admin(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
    yield postgres_cluster.role_dsn(ROLE, ROLE)
    postgres_cluster.drop_database(ROLE)
    postgres_cluster._admin(f"DROP ROLE {ROLE}")


@contextlib.asynccontextmanager
async def _migrating(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Another server migrating the database of `dsn`: a session holding the migration lock
    (advisory locks are the database's) until it commits."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("BEGIN")
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    try:
        yield conn
    finally:
        await conn.close()


async def _waiting_for_the_lock(conn: asyncpg.Connection) -> None:
    """Until a session waits for the migration lock (seen in pg_locks, not guessed)."""
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objid = $1",
            MIGRATION_LOCK,
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no session waited for the migration lock")


async def _opened_after_the_other_migration(
    dsn: str, other: asyncpg.Connection, held_s: float
) -> PostgresCallStore:
    opening = asyncio.ensure_future(PostgresCallStore.open(dsn))
    try:
        await _waiting_for_the_lock(other)
        await asyncio.sleep(held_s)  # the other server's migration goes on a while
        await other.execute("COMMIT")
        return await opening
    finally:
        if not opening.done():
            opening.cancel()


async def test_a_role_s_statement_timeout_does_not_stop_a_server_starting_during_a_migration(
    role_dsn: str, postgres_cluster: PostgresCluster
) -> None:
    # Before: "cannot migrate ...: canceling statement due to statement timeout" at start.
    async with _migrating(postgres_cluster.dsn(ROLE)) as other:
        store = await _opened_after_the_other_migration(role_dsn, other, held_s=0.3)
    try:
        async with store._pool.acquire() as conn:
            version = await conn.fetchval("SELECT MAX(version) FROM schema_migrations")
            # The role's setting holds for the requests, as its DBA set it.
            assert await conn.fetchval("SHOW statement_timeout") == "100ms"
        assert version == SCHEMA_VERSION
    finally:
        await store.close()


async def test_a_migration_longer_than_a_request_s_timeout_is_waited_for(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # COMMAND_TIMEOUT_S (15 s) bounded the wait for the lock: a server started while another
    # built an index over a large table crashed with a bare TimeoutError, no message at all.
    monkeypatch.setattr(postgres_module, "COMMAND_TIMEOUT_S", 0.1)
    async with _migrating(postgres_dsn) as other:
        store = await _opened_after_the_other_migration(postgres_dsn, other, held_s=0.4)
        holder = await other.fetchval("SELECT pg_backend_pid()")
    # The wait is said (it said nothing, for as long as the other's index build took).
    (waiting,) = [r for r in caplog.records if "holds the migration lock" in r.getMessage()]
    assert f"PostgreSQL session {holder})" in waiting.getMessage()
    assert masked(postgres_dsn) in waiting.getMessage()
    try:
        assert await store.count_live() == 0
    finally:
        await store.close()


@pytest.mark.parametrize(("apart_s", "said"), [(0.0, None), (300.0, "ahead of"), (-90.0, "behind")])
async def test_a_server_clock_apart_from_the_database_s_is_warned_of_at_start_up(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture, apart_s: float, said: str | None
) -> None:
    """Servers on one database judge each other's times by their own clocks; one minutes
    apart from the rest settled their calls early and sent their webhooks twice, silently."""
    store = await PostgresCallStore.open(
        postgres_dsn, pool_size=1, clock=lambda: time.time() + apart_s
    )
    await store.close()
    warned = [
        r for r in caplog.records if "PostgreSQL's: servers on one database" in r.getMessage()
    ]
    if said is None:
        assert warned == []
    else:
        assert len(warned) == 1 and warned[0].levelname == "WARNING"
        assert f"{abs(apart_s):.0f}" in warned[0].getMessage() and said in warned[0].getMessage()
        assert "NTP" in warned[0].getMessage()


def test_a_url_whose_hosts_none_match_target_session_attrs_stops_start_up_in_one_line(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """`db1,db2?target_session_attrs=read-write` started while a failover has no primary yet
    (here: a primary asked to be a standby) was a traceback from inside asyncpg."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    environ.update(CONFIG_PATH=str(tmp_path / "config.json"), SANDBOX_PORT="0")
    environ.update(
        PORT=str(free_port()), DATABASE_URL=f"{postgres_dsn}?target_session_attrs=standby"
    )
    done = run_to_end([sys.executable, str(ROOT / "server.py")], tmp_path, environ, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "cannot start" in line]
    password = urlsplit(postgres_dsn).password
    assert password and password not in done.stderr
    assert "the calls database (DATABASE_URL) cannot be used: cannot connect to" in line
    assert masked(postgres_dsn) in line and "target_session_attrs" in line


@pytest.fixture
async def weak_role_dsn(postgres_cluster: PostgresCluster) -> AsyncIterator[str]:
    """A database whose owner is not the role of the URL, on PostgreSQL 15's defaults: PUBLIC
    has no CREATE on the public schema (revoked here for older versions too)."""
    postgres_cluster.start()
    name = "ei_weak"
    postgres_cluster.drop_database(name)
    postgres_cluster._admin(f"DROP ROLE IF EXISTS {name}")
    postgres_cluster._admin(f"CREATE ROLE {name} LOGIN PASSWORD 'pw'")
    owner = await asyncpg.connect(postgres_cluster.create_database(name))
    try:
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    finally:
        await owner.close()
    yield postgres_cluster.role_dsn(name, name)
    postgres_cluster.drop_database(name)
    postgres_cluster._admin(f"DROP ROLE {name}")


async def test_a_role_without_create_on_the_schema_is_told_what_to_grant(
    weak_role_dsn: str,
) -> None:
    with pytest.raises(DatabaseError) as refused:
        await PostgresCallStore.open(weak_role_dsn)
    said = str(refused.value)
    assert said.startswith(f"cannot migrate {masked(weak_role_dsn)}: permission denied for schema")
    assert "GRANT CREATE ON SCHEMA" in said and "owner" in said


async def test_a_role_that_may_only_read_and_write_serves_a_database_migrated_already(
    postgres_cluster: PostgresCluster, weak_role_dsn: str
) -> None:
    """A least-privilege role (SELECT, INSERT, UPDATE, DELETE, its owner migrating at each
    release) was refused at start-up though there was nothing to migrate: `CREATE TABLE IF NOT
    EXISTS schema_migrations` needs CREATE on the schema whether or not the table exists."""
    owner_dsn = postgres_cluster.dsn("ei_weak")
    migrated = await PostgresCallStore.open(owner_dsn)
    await migrated.close()
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ei_weak;"
            " GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ei_weak"
        )
    finally:
        await owner.close()
    store = await PostgresCallStore.open(weak_role_dsn)
    try:
        call = NewCall("call-0123456789ab", "+14155550123", "Ann", "en", "neutral")
        await store.create_call(call, {})
        assert (await store.get_call("call-0123456789ab", with_timeline=False)) is not None
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("query", "refusal", "advice"),
    [
        ("search_path=nowhere", "no schema has been selected", "?search_path=<schema>"),
        (
            "default_transaction_read_only=on",  # as a standby's sessions are
            "read-only transaction",
            "target_session_attrs=read-write",
        ),
    ],
)
async def test_a_session_that_cannot_migrate_is_told_why_and_what_to_do(
    postgres_dsn: str, query: str, refusal: str, advice: str
) -> None:
    dsn = f"{postgres_dsn}?{query}"
    with pytest.raises(DatabaseError) as refused:
        await PostgresCallStore.open(dsn)
    said = str(refused.value)
    assert said.startswith(f"cannot migrate {masked(dsn)}: ") and refusal in said
    assert advice in said


async def test_libpq_s_connect_timeout_in_the_url_is_taken_as_the_connect_bound(
    postgres_dsn: str,
) -> None:
    """`?connect_timeout=10`, as psql and psycopg read it, was sent to PostgreSQL as a setting
    and refused: 'unrecognized configuration parameter "connect_timeout"' at start-up."""
    store = await PostgresCallStore.open(f"{postgres_dsn}?connect_timeout=10&application_name=ei")
    try:
        async with store._pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "ei"  # the rest kept
        assert await store.count_live() == 0
    finally:
        await store.close()
    with pytest.raises(DatabaseError) as refused:
        await PostgresCallStore.open(f"{postgres_dsn}?connect_timeout=soon")
    assert "connect_timeout must be a whole number of seconds" in str(refused.value)
    assert masked(postgres_dsn) in str(refused.value)


@pytest.fixture(scope="module")
def second_host() -> Iterator[PostgresCluster]:
    """The second host of a two-host DATABASE_URL (this module's own cluster)."""
    with PostgresCluster() as cluster:
        yield cluster


async def _read_only_for_new_sessions(cluster: PostgresCluster, on: bool) -> None:
    """default_transaction_read_only for every session of `cluster`, once a new one sees it
    (the postmaster has reloaded: its sessions take it at their next statement)."""
    setting = (
        "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    )
    cluster._admin(f"ALTER SYSTEM {setting}")
    cluster._admin("SELECT pg_reload_conf()")
    for _ in range(500):
        conn = await asyncpg.connect(cluster.dsn())
        try:
            if await conn.fetchval("SHOW default_transaction_read_only") == ("on" if on else "off"):
                return
        finally:
            await conn.close()
        await asyncio.sleep(0.01)
    raise AssertionError("the cluster did not reload its configuration")


def _new_call(n: int) -> NewCall:
    return NewCall(f"call-{n:012d}", "+1234567890", "Fail Over", "en", "Calm")


async def test_a_primary_demoted_while_the_server_runs_is_left_for_the_new_one(
    postgres_cluster: PostgresCluster, second_host: PostgresCluster
) -> None:
    """`db1,db2?target_session_attrs=read-write`; a failover makes db2 the primary and leaves
    db1 running, taking no writes. The pool's connection to db1 was kept: every write on it
    failed (503) until the server was restarted."""
    name = "ei_failover"
    second_host._admin(
        f"ALTER ROLE {PostgresCluster.superuser} PASSWORD '{postgres_cluster.password}'"
    )
    second_host.password = postgres_cluster.password  # one password, as a URL has one
    for cluster in (postgres_cluster, second_host):
        cluster.start()
        cluster.drop_database(name)
        cluster.create_database(name)
        migrated = await PostgresCallStore.open(cluster.dsn(name))  # as a replica would be
        await migrated.close()
    one, two = (urlsplit(c.dsn(name)) for c in (postgres_cluster, second_host))
    hosts = f"{one.hostname}:{one.port},{two.hostname}:{two.port}"
    dsn = urlunsplit(
        one._replace(
            netloc=f"{one.username}:{one.password}@{hosts}", query="target_session_attrs=read-write"
        )
    )
    store = await PostgresCallStore.open(dsn, pool_size=1)
    try:
        await store.create_call(_new_call(1))  # on db1
        await _read_only_for_new_sessions(postgres_cluster, True)  # the failover
        with pytest.raises(DatabaseError, match="read-only transaction"):
            await store.create_call(_new_call(2))
        await store.create_call(_new_call(3))  # on db2, the new primary
        assert await store.get_call("call-000000000003") is not None
    finally:
        await store.close()
        await _read_only_for_new_sessions(postgres_cluster, False)
        postgres_cluster.drop_database(name)
    on_two = await asyncpg.connect(second_host.dsn(name))
    try:
        assert await on_two.fetchval("SELECT count(*) FROM calls") == 1
    finally:
        await on_two.close()


@pytest.mark.parametrize("write", [False, True])
async def test_a_connection_ended_while_idle_in_the_pool_costs_no_request(
    postgres_cluster: PostgresCluster, postgres_dsn: str, write: bool
) -> None:
    """A DBA ending idle sessions (pg_terminate_backend), a proxy resetting them: the request
    that drew such a connection from the pool was answered 503, nothing having been sent."""
    store = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    try:
        assert await store.count_live() == 0
        database = urlsplit(postgres_dsn).path.lstrip("/")
        # Waited for (and the loop held meanwhile): the pool has not seen its connection end.
        postgres_cluster._admin(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"  # noqa: S608
            f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        if write:
            await store.create_call(_new_call(7))
            assert await store.get_call("call-000000000007") is not None
        else:
            assert await store.count_live() == 0
    finally:
        await store.close()


@pytest.mark.parametrize("migrate", [True, False])
async def test_a_connection_lost_during_the_start_up_checks_is_said_not_a_traceback(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, migrate: bool
) -> None:
    """The start-up's warnings (synchronous_commit, the clock) and the read-only version check
    (`agent describe`) caught only PostgreSQL's refusals: a connection lost in one of them (a
    failover, a proxy's reset) ended start-up in a bare ConnectionResetError. The warnings are
    left unsaid; the version check is a DatabaseError naming the database, password masked."""
    await (await PostgresCallStore.open(postgres_dsn, pool_size=1)).close()  # migrated
    real = asyncpg.connection.Connection.fetchval

    async def lost(self: asyncpg.Connection, query: str, *args: object) -> object:
        # (to_regclass: the read-only check's; a migration's statements lost are its refusal)
        checked = "to_regclass" in query and not migrate
        if "synchronous_commit" in query or "clock_timestamp" in query or checked:
            raise ConnectionResetError("connection reset by peer")
        return await real(self, query, *args)

    monkeypatch.setattr(asyncpg.connection.Connection, "fetchval", lost)
    if migrate:
        await (await PostgresCallStore.open(postgres_dsn, pool_size=1)).close()
        return
    with pytest.raises(DatabaseError) as caught:
        await PostgresCallStore.open(postgres_dsn, pool_size=1, migrate=False)
    assert "cannot read" in str(caught.value) and "connection reset" in str(caught.value)
    assert masked(postgres_dsn) in str(caught.value)
