"""The PostgreSQL backend (DATABASE_URL=postgresql://...): several servers on one database.

The transaction programs of common/storage/programs.py run on a pooled asyncpg connection,
one awaited query at a time; a write runs in one transaction (READ COMMITTED, whatever the
database's default isolation; the programs lock the call row they change with FOR UPDATE,
claim work with FOR UPDATE SKIP LOCKED and serialise admission with an advisory lock, so
limits hold across servers). Each SQL text's `?` placeholders become `$n` once, and asyncpg
prepares (and caches) the statement.

A lost connection (the database restarted, a network cut) fails the request it was serving
with DatabaseError (answered 503) and the pool replaces the connection on its next use: the
server keeps running and recovers when the database is back.

The schema comes from migrations/postgres/, applied at start under an advisory lock in one
transaction, tracked in `schema_migrations`: two servers starting at once migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Generic, TypeVar
from urllib.parse import SplitResult, unquote_plus, urlsplit

import asyncpg

from common.repeats import OneLineRepeats, Outage, say_held_back_at_stop
from common.storage.base import (
    ASKING_FOR_A_NEW_CALL,
    CommitUnknown,
    DatabaseError,
    DatabaseNewer,
    DatabaseStalled,
)
from common.storage.migrations import describe, migrations_for, renumbered
from common.storage.programs import POSTGRES, Program, Query, Row
from common.storage.sql import SqlCallStore

logger = logging.getLogger(__name__)

T = TypeVar("T")
MIGRATIONS = migrations_for("postgres")
SCHEMA_VERSION = MIGRATIONS[-1].version
MIGRATION_LOCK = 7246000  # pg_advisory_xact_lock key: one migrating server at a time
# Whether the schema has this server's version table (the search_path's, as CREATE sees it).
_HAS_MIGRATIONS_TABLE = "SELECT to_regclass('schema_migrations') IS NOT NULL"
CONNECT_TIMEOUT_S = 10.0
# How long a request waits for a connection while PostgreSQL has no slot left (`_connection`):
# under the readiness probe's 2 s, which then says "too many clients", not "timeout".
POOL_WAIT_S = 1.5
POOL_RETRY_S = (0.02, 0.05, 0.1, 0.2, 0.4)  # then every 0.4 s: each try is a refused login
# How long a request waits for one of the pool's connections at all, as SQLite's QUEUE_WAIT_S:
# while every connection waits on a lock (a table locked by hand) or a stalled PostgreSQL,
# requests queued behind them were answered 15 s after each other (40 reads of one call: 15,
# 30, 45, 60 s), a queue with no bound. Past it the request is answered 503 without being run.
QUEUE_WAIT_S = 10.0
COMMAND_TIMEOUT_S = 15.0
# How long a statement waits for a lock (PostgreSQL's lock_timeout), as long as a request
# waits for a connection: with only COMMAND_TIMEOUT_S, the first request to find the calls
# table locked by another session (a DBA's LOCK TABLE) was answered 15 s on, a bare
# "calls database unavailable", while those queued behind it were told at 10 s that it did
# not answer in time. Our own transactions hold their locks for milliseconds.
LOCK_WAIT_S = QUEUE_WAIT_S
MIGRATION_STATEMENT_TIMEOUT_S = 3600.0
# How far this server's clock may be from PostgreSQL's before start-up warns of it
# (`_warn_if_clock_apart`): well past NTP's milliseconds, well within the leases' minute.
CLOCK_APART_S = 5.0
# A session idle this long inside a transaction is ended by PostgreSQL, and its locks with it.
# Ours run their statements back to back; one that idles is a server stalled mid-transaction
# (a VM frozen, a network cut): it held the admission lock, and every server's calls waited
# for it, then failed, for as long as the stall lasted (ten minutes in a probe).
IDLE_IN_TRANSACTION_S = 10.0


def _session_settings() -> dict[str, str]:
    """What every connection asks of its session (a pooler must pass them on, or ignore
    them), read as a pool opens (the module's waits, as they are then)."""
    return {
        "idle_in_transaction_session_timeout": str(int(IDLE_IN_TRANSACTION_S * 1000)),
        "lock_timeout": str(int(LOCK_WAIT_S * 1000)),
    }


# What a statement prepared on a connection and not found there when used raises (or one of
# its name found there already): a pooler in transaction mode in between (_uncached).
_STATEMENT_NOT_KEPT = (
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.DuplicatePreparedStatementError,
)
# What a broken or refused connection raises; the request fails, the pool heals.
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    ConnectionError,
    OSError,
    TimeoutError,
)
# A connection that fails as the pool takes it back: asyncpg terminates it, and the pool opens
# another when one is asked for; nothing to say of it.
_RELEASE_ERRORS = (asyncpg.PostgresError, asyncpg.InternalClientError, *_CONNECTION_ERRORS)


def _release_outcome(release: asyncio.Future[None]) -> None:
    """The outcome of a release its caller stopped waiting for, taken: a connection cut is
    nothing to say (as for one waited for); a defect is logged."""
    if release.cancelled():
        return
    exc = release.exception()
    if exc is not None and not isinstance(exc, _RELEASE_ERRORS):
        logger.error("calls database: giving a connection back failed", exc_info=exc)


def _quiet_pool_log() -> None:
    """asyncpg's pool, refilling itself while the database is down, logs a 40-line traceback
    every few seconds: one line a minute says the same (one filter per process)."""
    pool_logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OneLineRepeats) for f in pool_logger.filters):
        pool_logger.addFilter(OneLineRepeats())


# The text after `@` in a libpq/asyncpg URL: hosts (a name, an address, `[IPv6]`), each with
# an optional port, comma-separated (`h1:5432,[::1]:5433`). Anything else there is the rest of
# a password whose unencoded `/`, `?` or `#` the parser took for the end of the host.
_HOST = r"(?:\[[^\]/?#@]*\]|[^\[\]:,/?#@]*)(?::\d*)?"
_HOST_LIST = re.compile(rf"{_HOST}(?:,{_HOST})*")
_UNPARSED = "DATABASE_URL"


_DOES_NOT_PARSE = (
    "DATABASE_URL does not parse (percent-encode / # ? @ : in the user name and password)"
)


def _refused(dsn: str, exc: Exception) -> str:
    """What asyncpg refuses in a URL (`sslmode=required`: "`sslmode` parameter must be one
    of: disable, ..."), the URL masked; it was said to "not parse", a password's characters
    to blame. A URL that does not read as one, or a refusal quoting a secret of it, gets the
    line that says nothing of it."""
    shown, text = masked(dsn), str(exc)
    if shown == _UNPARSED or any(secret in text for secret in _secrets(dsn)):
        return _DOES_NOT_PARSE
    return f"{shown} is refused: {text}"


def _split(dsn: str) -> SplitResult:
    """urlsplit(dsn), its hosts as written where urlsplit refuses them: a bracketed IPv6 host
    after another (`h1:5432,[::1]:5433`, a list libpq and asyncpg take) is "Invalid IPv6
    URL" to the Pythons of 2025 on (CPython 3.11.12, 3.12.9, 3.13.2; Debian 12's 3.11.2)."""
    try:
        return urlsplit(dsn)
    except ValueError:
        head, slashes, rest = dsn.partition("//")
        if not slashes:
            raise
        end = min((at for at in map(rest.find, "/?#") if at >= 0), default=len(rest))
        return urlsplit(f"{head}//{rest[end:]}")._replace(netloc=rest[:end])


def _for_asyncpg(dsn: str) -> str:
    """`dsn` as asyncpg reads it on any Python: a host list urlsplit refuses (see _split),
    which asyncpg's own urlparse refused too ("does not parse", on Debian 12's python3),
    moved to the `host` query parameter, read the same (`host=h1:5432,[::1]:5433`, after
    any `host=` given there, as the URL's hosts came first). Any other URL as it is."""
    try:
        urlsplit(dsn)
        return dsn
    except ValueError:
        pass
    try:
        parts = _split(dsn)
    except ValueError:
        return dsn
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "#" in dsn or not hosts or not _HOST_LIST.fullmatch(hosts):
        return dsn  # asyncpg's own refusal: said without quoting it
    query = "&".join(piece for piece in (parts.query, f"host={hosts}") if piece)
    return f"{parts.scheme}://{userinfo}{at}{parts.path}?{query}"


def _secrets(dsn: str) -> list[str]:
    """The password and the values of secret query parameters in `dsn`, as written and
    decoded."""
    parts = _split(dsn)
    userinfo, _at, _hosts = parts.netloc.rpartition("@")
    found = [userinfo.partition(":")[2]]
    for piece in parts.query.split("&"):
        name, _equals, value = piece.partition("=")
        if secret_parameter(name):
            found.append(value)
    return [text for secret in found if secret for text in (secret, unquote_plus(secret))]


def secret_parameter(name: str) -> bool:
    """A URL query parameter whose value is a secret: asyncpg reads `password` and
    `sslpassword`, and sends any name it does not know to the server as a setting, so any
    name about a password, secret or token is one (`passfile` is only a file's path)."""
    key = unquote_plus(name).strip().lower()
    return key != "passfile" and any(word in key for word in ("pass", "secret", "token"))


def masked(dsn: str) -> str:
    """`dsn` for logs and error lines: every password in it as *** (the user info's, and the
    value of `password=`, `sslpassword=` or any other secret query parameter), the hosts,
    ports, database, user and other parameters as given. A URL that does not read as one
    (a password's unencoded `/`, `?`, `#` or `@` moved its pieces) is named, not quoted."""
    try:
        parts = _split(dsn)
    except ValueError:
        return _UNPARSED
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "#" in dsn or "@" in parts.path or not _HOST_LIST.fullmatch(hosts):
        return _UNPARSED
    if not at and "@" in parts.query:  # the user info was cut short: it is in the query
        return _UNPARSED
    if at:
        user, colon, _password = userinfo.partition(":")  # asyncpg splits at the first `:`
        hosts = f"{user}:***@{hosts}" if colon else f"{user}@{hosts}"
    query = _masked_query(parts.query)
    if query is None:
        return _UNPARSED
    return f"{parts.scheme}://{hosts}{parts.path}" + (f"?{query}" if query else "")


def hosts_of(dsn: str) -> str:
    """Where `dsn` points, for a line saying it does not answer: its hosts with their ports
    (`db1:5432,db2:5433`; `host=`/`port=` in the query, libpq's localhost:5432 when none),
    nothing of its user, password or database. A URL that does not read as one (see
    `masked`) is named, not quoted."""
    if masked(dsn) == _UNPARSED:
        return _UNPARSED
    parts = _split(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    query = dict(piece.partition("=")[::2] for piece in parts.query.split("&") if piece)
    if not hosts.strip(","):
        hosts = unquote_plus(query.get("host", "")) or "localhost"
    port = unquote_plus(query.get("port", "")) or "5432"
    named = []
    for host in hosts.split(","):
        found = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", host)
        name, own_port = (found.group(1), found.group(2)) if found else (host, None)
        named.append(f"{name or 'localhost'}:{own_port or port}")
    return ",".join(named)


def _masked_query(query: str) -> str | None:
    """The query with each secret parameter's value as ***; None if a piece is no
    `name=value` (as asyncpg's strict parsing says) or holds a `@` (part of a password)."""
    pieces = []
    for piece in query.split("&") if query else []:
        name, equals, value = piece.partition("=")
        if not equals or "@" in name:
            return None
        if secret_parameter(name):
            pieces.append(f"{name}=***")
        elif "@" in value:
            return None
        else:
            pieces.append(piece)
    return "&".join(pieces)


def _connect_timeout(dsn: str) -> tuple[str, float]:
    """`dsn` without libpq's `connect_timeout`, and the connect bound it asks for (whole
    seconds, at least 2, as libpq reads it; 0, libpq's "wait forever", and none: this
    server's CONNECT_TIMEOUT_S). asyncpg does not read it and sent it to PostgreSQL as a
    setting: a URL written for libpq (psql, psycopg) stopped start-up with `unrecognized
    configuration parameter "connect_timeout"`."""
    base, question, query = dsn.partition("?")
    if not question:
        return dsn, CONNECT_TIMEOUT_S
    kept, timeout = [], CONNECT_TIMEOUT_S
    for piece in query.split("&"):
        name, _equals, value = piece.partition("=")
        if unquote_plus(name).strip() != "connect_timeout":
            kept.append(piece)
            continue
        try:
            seconds = int(unquote_plus(value).strip())
        except ValueError:
            raise DatabaseError(
                f"{masked(dsn)} is refused: connect_timeout must be a whole number of"
                " seconds (libpq's, which this server takes as its connect bound)"
            ) from None
        timeout = float(max(seconds, 2)) if seconds > 0 else CONNECT_TIMEOUT_S
    return base + (f"?{'&'.join(kept)}" if kept else ""), timeout


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (our SQL has no `?` in literals)."""
    pieces = sql.split("?")
    out = [pieces[0]]
    for n, piece in enumerate(pieces[1:], start=1):
        out.append(f"${n}{piece}")
    return "".join(out)


class PostgresCallStore(SqlCallStore):
    """CallStore on PostgreSQL, shared by any number of servers."""

    dialect = POSTGRES

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        clock: Callable[[], float] = time.time,
        instance: str = "",
    ) -> None:
        super().__init__(clock, instance)
        self._pool = pool
        self.dsn = dsn
        # How to open the pool again without prepared statements kept (_uncached), once a
        # pooler in transaction mode is found between this server and PostgreSQL.
        self._reopen: Callable[[], Awaitable[asyncpg.Pool]] | None = None
        self._uncaching: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()
        # Set as the server stops (stop_by): its waits end by then, and so do its connections.
        self._stop_deadline = math.inf
        self._stop_wait_s = 0.0
        self._cut_off: asyncio.TimerHandle | None = None
        # Requests waiting for one of the pool's connections now: said when one waited too
        # long, so a burst bigger than the pool serves is told from PostgreSQL's own trouble.
        self._queued = 0
        # The connections new calls' admissions may hold at once: the rest serve the calls
        # already recorded (marking their dial, recording it), webhooks and reports.
        self._new_calls = asyncio.Semaphore(new_call_share(pool.get_max_size()))
        # PostgreSQL found unreachable or not answering in time: said once it answers again.
        self._outage = Outage()

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_size: int = 10,
        clock: Callable[[], float] = time.time,
        instance: str = "",
        migrate: bool = True,
    ) -> PostgresCallStore:
        """Connect (bounded), migrate, and return the store; DatabaseError with the URL's
        password masked when the database cannot be reached or used. With `migrate` False
        (a tool that only reads) a database at another schema version is a DatabaseError."""
        _quiet_pool_log()
        given, connect_timeout = _connect_timeout(dsn)
        given = _for_asyncpg(given)

        def create_pool(**more: Any) -> Awaitable[asyncpg.Pool]:
            return asyncpg.create_pool(
                given,
                min_size=1,
                max_size=pool_size,
                timeout=connect_timeout,
                command_timeout=COMMAND_TIMEOUT_S,
                server_settings=_session_settings(),
                **more,
            )

        try:
            pool = await create_pool()
        except asyncpg.ClientConfigurationError as exc:  # `sslmode=required`: a parameter
            raise DatabaseError(_refused(dsn, exc)) from None
        except ValueError:  # the URL does not parse: its text may quote the password
            raise DatabaseError(_DOES_NOT_PARSE) from None
        except OverflowError:  # a port past 65535, which asyncpg passes on to connect()
            raise DatabaseError(
                f"cannot connect to {masked(dsn)}: a port in it is past 65535"
            ) from None
        except asyncpg.TargetServerAttributeNotMatched as exc:
            # `h1,h2?target_session_attrs=read-write` started during a failover (no primary
            # yet), or naming standbys only: it was a traceback, the URL's hosts unsaid.
            raise DatabaseError(
                f"cannot connect to {masked(dsn)}: {_why(exc)} (a failover under way, or"
                " none of its hosts is what target_session_attrs asks for)"
            ) from None
        except asyncpg.ProtocolViolationError as exc:
            # PgBouncer refusing the session settings every connection asks for said only
            # "unsupported startup parameter: lock_timeout": what to do was in README alone.
            hint = (
                f" (a pooler in between, PgBouncer: list {', '.join(_session_settings())} in its"
                " ignore_startup_parameters)"
                if "startup parameter" in str(exc)
                else ""
            )
            raise DatabaseError(f"cannot connect to {masked(dsn)}: {_why(exc)}{hint}") from None
        except (asyncpg.PostgresError, asyncpg.InternalClientError, *_CONNECTION_ERRORS) as exc:
            raise DatabaseError(f"cannot connect to {masked(dsn)}: {_why(exc)}") from None
        store = cls(pool, dsn, clock, instance)
        store._reopen = functools.partial(create_pool, statement_cache_size=0)
        try:
            await store._migrate_or_check(migrate)
            if migrate:
                await store._warn_unless_commits_wait_for_disk()
                await store._warn_if_clock_apart()
        except BaseException:
            await store.close()
            raise
        return store

    async def _migrate_or_check(self, migrate: bool) -> None:
        """The schema migrated (or its version checked), again on a pool that keeps no
        prepared statements if a pooler in transaction mode is found meanwhile (_uncached):
        two servers starting together behind PgBouncer, the second met the first's
        statement on the session it was handed and stopped, 'cannot migrate ...: prepared
        statement "__asyncpg_stmt_1__" already exists'. Rolled back: done again whole."""
        try:
            await (self._migrate() if migrate else self._check_version())
        except _STATEMENT_NOT_KEPT as exc:
            await self._uncached(exc)
            try:
                await (self._migrate() if migrate else self._check_version())
            except _STATEMENT_NOT_KEPT as again:
                what = "migrate" if migrate else "read"
                raise DatabaseError(f"cannot {what} {masked(self.dsn)}: {_why(again)}") from None

    async def _warn_unless_commits_wait_for_disk(self) -> None:
        """`synchronous_commit=off` answers a COMMIT before its WAL is written: a crash of
        PostgreSQL then loses commits the server relied on (BU: after 7 SIGKILLs, 2 calls
        dialled with no row left, their call.dialing sent for calls GET /calls did not
        know). Not changed here: a DBA's stronger setting (remote_apply) must stay, and a
        pooler may not pass it on. Said once, at start-up."""
        try:
            async with self._pool.acquire() as conn:
                value = await conn.fetchval("SELECT current_setting('synchronous_commit')")
        except (asyncpg.PostgresError, *_CONNECTION_ERRORS):  # a warning only: never fatal
            return
        if value == "off":
            logger.warning(
                "PostgreSQL's synchronous_commit is off for this server's sessions: a commit"
                " it answered can be lost if PostgreSQL crashes (a call dialled and then"
                " unknown, an Idempotency-Key forgotten, so that a retry calls the person"
                " again). Set it on: ALTER DATABASE <name> SET synchronous_commit = on, or in"
                " postgresql.conf"
            )

    async def _warn_if_clock_apart(self) -> None:
        """Servers on one database compare the times each other wrote by their own clocks
        (the outbox's and the deliveries' leases, the reaper's bounds, the rate limit's
        minute), never PostgreSQL's: two servers' clocks minutes apart had the one ahead
        settle the other's calls as never dialled or lost, send its webhooks twice (its
        lease looked run out) and count its calls out of the rate's minute, all silently.
        PostgreSQL's clock is the one all of them can be held to: a server apart from it by
        more than CLOCK_APART_S (past the query's round trip) says so at start-up, once."""
        try:
            async with self._pool.acquire() as conn:
                sent = self._clock()
                theirs = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())")
                answered = self._clock()
        except (asyncpg.PostgresError, *_CONNECTION_ERRORS):  # a warning only: never fatal
            return
        apart = (sent + answered) / 2 - float(theirs)
        if abs(apart) > CLOCK_APART_S + (answered - sent) / 2:
            logger.warning(
                "this server's clock is %.1f s %s PostgreSQL's: servers on one database judge"
                " the times each other wrote by their own clocks (leases, the reaper's bounds,"
                " the rate limit's minute, campaigns' retries), so a server's clock apart from"
                " another's settles its calls early, sends its webhooks twice, miscounts its"
                " rate, or (ahead) takes every campaign over and places retries early. Keep"
                " every server's clock and the database host's in sync (NTP: chrony,"
                " systemd-timesyncd)",
                abs(apart),
                "ahead of" if apart > 0 else "behind",
            )

    async def _check_version(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                foreign = await _foreign_schema(conn)
                if foreign is None:
                    known = await conn.fetchval(_HAS_MIGRATIONS_TABLE)
                    version = (
                        await conn.fetchval(
                            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                        )
                        if known
                        else 0
                    )
        except _STATEMENT_NOT_KEPT:
            raise  # _migrate_or_check
        except (asyncpg.PostgresError, *_CONNECTION_ERRORS) as exc:
            # A connection lost here (`agent describe` opening the database read-only) was a
            # traceback: only the server's refusals were caught.
            raise DatabaseError(f"cannot read {masked(self.dsn)}: {_why(exc)}") from None
        if foreign is not None:
            raise DatabaseError(f"cannot read {masked(self.dsn)}: {foreign}")
        if version != SCHEMA_VERSION:
            raise DatabaseError(
                f"{masked(self.dsn)} has schema version {version}, this code reads"
                f" {SCHEMA_VERSION}; the server migrates it when it starts"
            )

    async def _migrate(self) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # Another server's migration, and a table's live transactions, are waited for
                # as long as a migration's statement may take, not LOCK_WAIT_S, nor the
                # request's COMMAND_TIMEOUT_S, nor a statement_timeout the role has (ALTER
                # ROLE ... SET statement_timeout): with either, a server started while another
                # migrated failed to start ("canceling statement due to statement timeout",
                # or a bare TimeoutError 15 s on), and an index built over a large table could
                # never be. Each statement is bounded by MIGRATION_STATEMENT_TIMEOUT_S here.
                await conn.execute("SET LOCAL lock_timeout = 0")
                await conn.execute("SET LOCAL statement_timeout = 0")
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MIGRATION_LOCK):
                    # Said, as the migrating server says it migrates: a server waiting here
                    # said nothing at all, for as long as an index build takes.
                    logger.warning(
                        "database %s: another session holds the migration lock (another server"
                        " migrating it, PostgreSQL session %s); waiting for it to finish before"
                        " serving",
                        masked(self.dsn),
                        await conn.fetchval(_MIGRATION_LOCK_HOLDER, MIGRATION_LOCK),
                    )
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1)",
                        MIGRATION_LOCK,
                        timeout=MIGRATION_STATEMENT_TIMEOUT_S,
                    )
                foreign = await _foreign_schema(conn)
                if foreign is not None:  # before anything is made or written in it
                    raise DatabaseError(f"cannot migrate {masked(self.dsn)}: {foreign}")
                # Made only where it is missing: PostgreSQL checks CREATE on the schema before
                # it looks for the table, so `CREATE TABLE IF NOT EXISTS` refused a role that
                # may only read and write ("permission denied for schema public") on a
                # database its owner had migrated already, with nothing to make.
                if not await conn.fetchval(_HAS_MIGRATIONS_TABLE):
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY"
                        " KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                    )
                version = await conn.fetchval(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                )
                if version > SCHEMA_VERSION:
                    raise DatabaseNewer(
                        f"{masked(self.dsn)} has schema version {version}, newer than this code"
                        f" ({SCHEMA_VERSION})"
                    )
                await self._apply_renumbered(conn)
                if 0 < version < SCHEMA_VERSION:  # a new database's schema is made at once
                    logger.info(
                        "database %s: migrating from schema version %d to %d; nothing is"
                        " served until it is done (an index built over a large table holds"
                        " its writes and takes a while)",
                        masked(self.dsn),
                        version,
                        SCHEMA_VERSION,
                    )
                for migration in MIGRATIONS:
                    if migration.version <= version:
                        continue
                    for statement in migration.statements:
                        # an index built over a large table takes longer than a request may
                        await conn.execute(statement, timeout=MIGRATION_STATEMENT_TIMEOUT_S)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        time.time(),
                    )
                    logger.info(
                        "database at schema version %d (%s)", migration.version, migration.name
                    )
        except TimeoutError:
            raise DatabaseError(
                f"cannot migrate {masked(self.dsn)}: a statement did not finish within"
                f" {MIGRATION_STATEMENT_TIMEOUT_S:.0f} s (another server's migration, or a"
                " session holding a lock on a table: see pg_stat_activity); start again once"
                " it is done"
            ) from None
        except _STATEMENT_NOT_KEPT:
            raise  # _migrate_or_check
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            hint = _MIGRATE_HINTS.get(type(exc), "")
            raise DatabaseError(f"cannot migrate {masked(self.dsn)}: {_why(exc)}{hint}") from None

    async def _apply_renumbered(self, conn: Any) -> None:
        """The migrations of RENUMBERED that schema_migrations records under another name
        (the backed-out release's): never applied, applied now and recorded under their own."""
        recorded = {
            row["version"]: row["name"]
            for row in await conn.fetch("SELECT version, name FROM schema_migrations")
        }
        skipped = tuple(
            m for m in renumbered("postgres") if recorded.get(m.version, m.name) != m.name
        )
        for migration in skipped:
            for statement in migration.statements:
                await conn.execute(statement, timeout=MIGRATION_STATEMENT_TIMEOUT_S)
            await conn.execute(
                "UPDATE schema_migrations SET name = $2, applied_at = $3 WHERE version = $1",
                migration.version,
                migration.name,
                time.time(),
            )
        if skipped:
            logger.warning(
                "database %s: migrations %s had been skipped (a release of 2026-12-04, since"
                " backed out, migrated it and gave their numbers to its own: %s); applied now",
                masked(self.dsn),
                describe(skipped),
                ", ".join(recorded[m.version] for m in skipped),
            )

    def stall_causes(self, *, public: bool) -> str:
        """/readyz said SQLite's "locked by another process, overloaded, or its disk stalls"
        of a PostgreSQL SIGSTOPped or cut off: it is not answering. Its hosts are the log's
        to name (/readyz needs no token, as config.json's paths)."""
        where = "DATABASE_URL's host" if public else hosts_of(self.dsn)
        return (
            f"PostgreSQL at {where} is not answering: stopped, frozen or cut off from this"
            " server, or overloaded; check that it runs and that this server reaches it"
        )

    def stop_by(self, deadline: float) -> None:
        """Each step of a stop (the reaper's and the scheduler's work cancelled, claims given
        back, the sandbox's calls settled, the pool closed) waited on a PostgreSQL that does
        not answer (frozen, cut off) for a connection or a rollback, 10 to 15 s each: a
        SIGTERM took 36-46 s, past Kubernetes' 30 s grace, whose SIGKILL left the stop
        unsaid. From now on no wait goes past `deadline`, and at it the connections still
        in use are closed: what they were doing ends with a DatabaseError at once."""
        self._stop_deadline = deadline
        self._stop_wait_s = max(deadline - asyncio.get_running_loop().time(), 0.0)
        if self._cut_off is None:
            self._cut_off = asyncio.get_running_loop().call_at(deadline, self._stop_waiting)

    def _stop_waiting(self) -> None:
        self._cut_off = None
        busy = self._pool.get_size() - self._pool.get_idle_size()
        logger.warning(
            "calls database: no answer within %.0f s of the stop; stopping without it%s"
            " (what is left undone, the next start or another server takes over)",
            self._stop_wait_s,
            f", {busy} connection(s) in use closed" if busy > 0 else "",
        )
        self._pool.terminate()
        for closing in self._retired:
            closing.cancel()

    async def close(self) -> None:
        if self._uncaching is not None and not self._uncaching.done():
            self._uncaching.cancel()
        remaining = self._stop_deadline - asyncio.get_running_loop().time()
        try:
            # Bounded as the stop is (a connection that never comes back held it for good).
            async with asyncio.timeout(None if math.isinf(remaining) else max(remaining, 0.0)):
                await self._pool.close()
        except TimeoutError:
            self._stop_waiting()
        finally:
            if self._cut_off is not None:
                self._cut_off.cancel()
                self._cut_off = None
        await asyncio.gather(*self._retired, return_exceptions=True)
        say_held_back_at_stop(self._outage, self.repeats, logger, "calls database")

    def _uncached(self, exc: Exception) -> asyncio.Task[None]:
        """The pool opened again without prepared statements kept, once: a statement this
        server prepared on a connection was not there when used (or one of its name was
        already), so DATABASE_URL leads through a pooler in transaction mode (PgBouncer's
        pool_mode=transaction before 1.21, or without max_prepared_statements), which gives
        each transaction whichever PostgreSQL session is free. Every request, the reaper,
        the webhook sender and the campaigns failed, 503 'prepared statement
        "__asyncpg_stmt_48__" does not exist', and nothing said why. Each statement is now
        prepared as it is sent (a round trip more); said once."""
        if self._uncaching is None:
            assert self._reopen is not None  # noqa: S101 - set by open(), as the pool is
            logger.warning(
                "calls database: its sessions do not keep this server's prepared statements"
                " as it left them (%s): DATABASE_URL leads through a pooler in transaction"
                " mode (PgBouncer's pool_mode=transaction), which hands each transaction"
                " another PostgreSQL session; statements are not kept prepared from now on"
                " (each costs a round trip more). PgBouncer 1.21 or later with"
                " max_prepared_statements set, or pool_mode=session, keeps them",
                _why(exc),
            )
            self._uncaching = asyncio.get_running_loop().create_task(self._swap_pool())
        return self._uncaching

    async def _swap_pool(self) -> None:
        assert self._reopen is not None  # noqa: S101 - see _uncached
        try:
            pool = await self._reopen()
        except BaseException:
            self._uncaching = None  # asked again by the next request that fails so
            raise
        old, self._pool = self._pool, pool
        # Closed once the requests holding its connections give them back.
        closing = asyncio.get_running_loop().create_task(old.close())
        self._retired.add(closing)
        closing.add_done_callback(self._retired.discard)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A connection of the pool. PostgreSQL refusing it one more ("too many clients": the
        servers' pools add up past max_connections) is waited out for POOL_WAIT_S, tried again
        ever less often, as the pool's own connections come free: requests got 503 while the
        server held idle connections of its own (a probe: 10-15 of 30 at once, with 3 servers
        over 20 slots)."""
        started = time.monotonic()
        deadline = started + POOL_WAIT_S
        pool = self._pool  # its connection goes back to it, though _uncached replaced it
        share = self._new_calls if ASKING_FOR_A_NEW_CALL.get() else None
        self._queued += 1
        try:
            if share is not None:  # (not taken if this raises)
                await self._take_share(share, started)
            try:
                conn = await self._acquire(pool, started, deadline)
            except BaseException:
                if share is not None:
                    share.release()
                raise
        finally:
            self._queued -= 1
        try:
            yield conn
        finally:
            # Not the acquire's timeout (asyncpg's default): what was left of QUEUE_WAIT_S.
            # A reset that fails as the pool takes the connection back (PostgreSQL restarted
            # meanwhile: "cannot switch to state 15; another operation (2) is in progress")
            # has asyncpg terminate it, and tells nothing of the work done on it: raised, it
            # took the place of that work's outcome, a committed write reported as failed
            # ("connection lost while committing") and a result lost.
            # asyncpg shields the release from its caller's cancellation (a probe's or a
            # scrape's bound, a stop, a client gone): the release went on alone, and its
            # failure (the connection cut as it was reset) was nobody's to take: asyncio's
            # "Task exception was never retrieved", an ERROR with a traceback. Taken here.
            try:
                release = asyncio.ensure_future(pool.release(conn, timeout=COMMAND_TIMEOUT_S))
                try:
                    with contextlib.suppress(*_RELEASE_ERRORS):
                        await asyncio.shield(release)
                except asyncio.CancelledError:
                    release.add_done_callback(_release_outcome)  # it goes on alone
                    raise
            finally:
                if share is not None:  # its connection back in the pool first
                    share.release()

    async def _take_share(self, share: asyncio.Semaphore, started: float) -> None:
        """One of the connections new calls may hold, waited for within QUEUE_WAIT_S (and the
        stop's bound), as the pool's own are: _NotBegun (503, nothing run) past it."""
        until_stop = self._stop_deadline - asyncio.get_running_loop().time()
        wait = max(started + QUEUE_WAIT_S - time.monotonic(), 0.0)
        try:
            async with asyncio.timeout(min(wait, until_stop)):
                await share.acquire()
        except TimeoutError:
            raise self._waited_out(until_stop, wait, self._pool) from None

    def _waited_out(self, until_stop: float, wait: float, pool: asyncpg.Pool) -> Exception:
        """Why a wait for one of `pool`'s connections (or new calls' share of them), bounded
        by the stop (`until_stop`) and by what was left of QUEUE_WAIT_S (`wait`), ran out."""
        if until_stop < wait:
            return self._stop_waited_out()
        return _NotBegun(self._queued - 1, pool.get_max_size())

    def _stop_waited_out(self) -> DatabaseStalled:
        return DatabaseStalled(
            f"database did not answer within {self._stop_wait_s:.0f} s of the stop"
        )

    async def _acquire(self, pool: asyncpg.Pool, started: float, deadline: float) -> Any:
        """A connection of `pool` (see _connection)."""
        for tries in itertools.count():
            # As the server stops, no longer than its stop allows (stop_by).
            until_stop = self._stop_deadline - asyncio.get_running_loop().time()
            if until_stop <= 0.0:
                raise self._stop_waited_out() from None
            try:
                wait = max(started + QUEUE_WAIT_S - time.monotonic(), 0.0)
                return await pool.acquire(timeout=min(wait, until_stop))
            except TimeoutError:
                raise self._waited_out(until_stop, wait, pool) from None
            except asyncpg.TooManyConnectionsError:
                pause = POOL_RETRY_S[min(tries, len(POOL_RETRY_S) - 1)]
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # itertools.count() never ends

    async def _attempt(self, drive: _Drive[T], *, write: bool) -> T:
        """`drive` run to its end on a connection of the pool (in a transaction if `write`)."""
        async with self._connection() as conn:
            try:
                if not write:  # no transaction: asyncpg retries a stale statement itself
                    return await drive.run(conn)
                try:
                    async with _transaction(conn):
                        result = await drive.run(conn)
                        drive.committing = True
                except asyncpg.InvalidCachedStatementError:
                    # Another server migrated the schema (a rolling upgrade): a statement
                    # prepared before returns other columns now, and the transaction is
                    # rolled back. asyncpg has cleared the pool's statements; the program
                    # goes on in a new transaction if what it was told holds there too.
                    async with _transaction(conn):
                        await drive.replay(conn)
                        result = await drive.run(conn)
                        drive.committing = True
                return result
            except (
                *_CONNECTION_ERRORS,
                asyncpg.InternalClientError,
                asyncpg.ReadOnlySQLTransactionError,
            ):
                # The connection is broken or out of step (a query cut off by a restart),
                # or on a server that takes no writes any more (a primary demoted by a
                # failover, left running: kept, every write on it failed until the server
                # was restarted): never hand it out again; the pool opens a fresh one, to
                # the host DATABASE_URL's target_session_attrs picks. (A connection the
                # pool already took back refuses terminate(): the first error is the one
                # to report, not that one.)
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                raise

    async def _run(self, program: Program[T], *, write: bool) -> T:
        result = await self._run_once(program, write=write)
        # After failures that were said (`calls database unreachable`, `… did not answer
        # in time`): said once, with how long and how many were held back since their line.
        if (ended := self._outage.ended(self.repeats)) is not None:
            logger.warning(
                "calls database answers again (%s for %.0f s; %d more failure(s) like it held"
                " back since its last line)",
                ended.first,
                ended.lasted_s,
                ended.held,
            )
        return result

    async def _run_once(self, program: Program[T], *, write: bool) -> T:
        drive = _Drive(program)
        try:
            try:
                return await self._attempt(drive, write=write)
            except _STATEMENT_NOT_KEPT as exc:
                await self._uncached(exc)
                if drive.answered:  # rolled back, but the program went on on what it was told
                    raise DatabaseError(_why(exc)) from None
                return await self._attempt(drive, write=write)  # nothing was answered
            except (asyncpg.ConnectionDoesNotExistError, asyncpg.InternalClientError):
                if drive.committing or drive.answered:
                    raise
                # Its connection was found closed before anything was answered (PostgreSQL
                # ended it while the pool held it idle: a DBA's pg_terminate_backend of idle
                # sessions, a proxy's reset), so nothing was written: asked once more, on a
                # fresh connection. Each request that drew such a connection was answered
                # 503 (4 of 4 after their 4 idle connections were ended). Or found out of
                # step, its last exchange cut off by PostgreSQL's restart (asyncpg refuses
                # to send on it, "cannot switch to state 12; another operation (2) is in
                # progress"): that was the line the log gave for a restart, and the request
                # a 503 even once PostgreSQL was back; asked again, the fresh connection
                # tells what there is to tell.
                return await self._attempt(drive, write=write)
        except asyncpg.UniqueViolationError as exc:
            raise DatabaseError(f"duplicate: {exc.constraint_name}") from None
        except _NotBegun as not_begun:
            self._outage.failed("did not answer in time")
            if (more := self.repeats.due("did not answer in time")) is not None:
                logger.error(
                    "calls database did not answer in time: none of this server's %d"
                    " connections (DATABASE_POOL_SIZE) came free within %.0f s, %d more"
                    " request(s) waiting for one (each connection waits on PostgreSQL: down or"
                    " cut off, overloaded, or a lock another session holds; or more requests"
                    " came at once than the connections serve in that time); requests are"
                    " answered 503 meanwhile%s",
                    not_begun.connections,
                    QUEUE_WAIT_S,
                    not_begun.others,
                    more,
                )
            raise DatabaseStalled("database did not answer in time (no connection free)") from None
        except _LockWaitedOut:  # rolled back: nothing was written
            if (more := self.repeats.due("lock not available")) is not None:
                logger.error(
                    "calls database did not answer in time: a statement waited %.0f s for a"
                    " lock another session holds (a LOCK TABLE, a long transaction); requests"
                    " are answered 503 meanwhile%s",
                    LOCK_WAIT_S,
                    more,
                )
            raise DatabaseStalled("database did not answer in time (waiting for a lock)") from None
        except (*_CONNECTION_ERRORS, asyncpg.InternalClientError) as exc:
            # Before PostgresError: some of these are PostgresErrors too (the connection's).
            slow = isinstance(exc, TimeoutError)  # it answers, but not in time: not "unreachable"
            what = "did not answer in time" if slow else "unreachable"
            self._outage.failed(what)
            if (more := self.repeats.due(what)) is not None:
                if slow:
                    logger.error(
                        "calls database %s (down or cut off, overloaded, or a statement"
                        " waiting for a lock another server holds)%s",
                        what,
                        more,
                    )
                else:
                    logger.error("calls database unreachable: %s%s", _why(exc), more)
            if drive.committing and not _unsent(exc):
                raise CommitUnknown(
                    f"connection lost while committing ({type(exc).__name__})"
                ) from None
            raise DatabaseError(f"database {what} ({type(exc).__name__})") from None
        except asyncpg.PostgresError as exc:  # the server refused: nothing was written
            if (more := self.repeats.due("error")) is not None:
                hint = ""
                if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
                    hint = (
                        " (the database takes no writes: a standby, or a primary a failover"
                        " demoted; the connection is dropped, the next one goes to the host"
                        " DATABASE_URL's target_session_attrs=read-write picks)"
                    )
                logger.error("calls database error: %s%s%s", _why(exc), hint, more)
            raise DatabaseError(_why(exc)) from None


@contextlib.asynccontextmanager
async def _transaction(conn: Any) -> AsyncIterator[None]:
    """`conn.transaction()`, raising the error that failed its work as itself. Where that
    error ended the session (PostgreSQL restarted or failed over, a DBA's
    pg_terminate_backend) asyncpg's rollback on the connection it closed raises its own
    ("cannot call Transaction.__aexit__(): the underlying connection is closed", "cannot
    switch to state 15; another operation (2) is in progress"), and that was all the log and
    the request's error said: PostgreSQL's "terminating connection due to administrator
    command" went unsaid.

    READ COMMITTED, asked for by each transaction: the programs are written for it (they lock
    what they change, FOR UPDATE, the admission's advisory lock, SKIP LOCKED claims), and a
    database or role whose default_transaction_isolation is stronger (serializable, a DBA's
    policy) failed concurrent placements with "could not serialize access" (8 of 60 calls
    answered 503 with two servers placing; webhook claims failed alike). In the BEGIN, not a
    session setting: a pooler (PgBouncer) passes it on."""
    failed: Exception | None = None
    try:
        async with conn.transaction(isolation="read_committed"):
            try:
                yield
            except Exception as exc:
                failed = exc
                raise
    except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        if failed is None or exc is failed:
            raise
        raise failed from None


def new_call_share(pool_size: int) -> int:
    """How many of `pool_size` connections new calls' admissions may hold at once: a quarter
    (at least one) is kept for the calls already recorded, unless the pool has only one."""
    return max(1, pool_size - max(1, pool_size // 4))


class _NotBegun(Exception):
    """No connection of the pool came free within QUEUE_WAIT_S: nothing was run."""

    def __init__(self, others: int, connections: int) -> None:
        super().__init__(f"{others} other request(s) waiting for {connections} connection(s)")
        self.others = others  # requests still waiting for a connection then
        self.connections = connections  # the pool's size


class _LockWaitedOut(Exception):
    """A statement waited LOCK_WAIT_S for a lock (lock_timeout), not one that asked for it
    NOWAIT (the readiness probe's, which names the table it found locked)."""


class _Drive(Generic[T]):
    """Runs `program` to its end on a connection: each query's rows are sent back into it.
    The queries it has been answered are kept: in a transaction begun anew they can be
    asked again (`replay`), and the program goes on where it was if they answer the same."""

    def __init__(self, program: Program[T]) -> None:
        self._program = program
        self._next: Query | None = None  # asked by the program, not answered yet
        self._answered: list[tuple[Query, list[Row]]] = []
        # The program ran to its end: a broken connection now hides the COMMIT.
        self.committing = False

    @property
    def answered(self) -> bool:
        """A query of the program was answered (it may have gone on on what it was told)."""
        return bool(self._answered)

    async def run(self, conn: Any) -> T:
        try:
            if self._next is None:
                self._next = next(self._program)
            while True:
                try:
                    rows: list[Row] = await conn.fetch(numbered(self._next.sql), *self._next.args)
                except asyncpg.LockNotAvailableError:
                    if "NOWAIT" in self._next.sql:
                        raise
                    raise _LockWaitedOut from None
                self._answered.append((self._next, rows))
                self._next = self._program.send(rows)
        except StopIteration as done:
            result: T = done.value
            return result

    async def replay(self, conn: Any) -> None:
        """Ask the answered queries again; DatabaseError if one answers otherwise now."""
        for query, rows in self._answered:
            if await conn.fetch(numbered(query.sql), *query.args) != rows:
                logger.warning(
                    "a transaction refused after a schema change (another server migrated)"
                    " answered otherwise when asked again; not gone on with"
                )
                raise DatabaseError("the database changed under a transaction; try again")


# The process id of the session holding the migration lock (pg_stat_activity's `pid`).
_MIGRATION_LOCK_HOLDER = (
    "SELECT string_agg(pid::text, ', ') FROM pg_locks WHERE locktype = 'advisory'"
    " AND granted AND database = (SELECT oid FROM pg_database WHERE datname ="
    " current_database()) AND ((classid::bigint << 32) | objid::bigint) = $1"
)


# schema_migrations as this code makes it (a later release may add columns), and the tables
# its first migration makes that another program is likely to have made too.
_OUR_MIGRATION_COLUMNS: Final = {
    "version": "integer",
    "name": "text",
    "applied_at": "double precision",
}
_OUR_TABLES: Final = ("calls", "events", "idempotency", "outbox", "reports", "deliveries", "dnc")


async def _foreign_schema(conn: Any) -> str | None:
    """Why the database DATABASE_URL names is another program's, or None. The seed's .env
    keeps the application's "Database URLs", DATABASE_URL among them: its schema_migrations
    (golang-migrate's, Rails', Ecto's, a script's) was read as this server's, and start-up
    said "schema version 20240101120000, newer than this code: run the release that migrated
    it, or restore the copy taken before the upgrade", or a bare SQL error (COALESCE types
    text and integer cannot be matched; relation "calls" already exists)."""
    columns = {
        row["attname"]: row["type"]
        for row in await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
            " WHERE attrelid = to_regclass('schema_migrations') AND attnum > 0"
            " AND NOT attisdropped"
        )
    }
    why = None
    if columns:
        if any(columns.get(name) != kind for name, kind in _OUR_MIGRATION_COLUMNS.items()):
            shown = ", ".join(f"{name} {kind}" for name, kind in columns.items())
            why = f"its schema_migrations table is not this server's (columns {shown})"
        else:
            first = await conn.fetch("SELECT name FROM schema_migrations WHERE version = 1")
            if first and first[0]["name"] == MIGRATIONS[0].name:
                return None  # this server's, since its first migration
            if first or await conn.fetchval("SELECT count(*) FROM schema_migrations"):
                # every database this server migrated records its first migration
                why = (
                    "its schema_migrations table is not this server's (no version 1"
                    f" {MIGRATIONS[0].name!r})"
                )
    if why is None:
        taken = await conn.fetchval(
            "SELECT array_agg(t) FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
            list(_OUR_TABLES),
        )
        if not taken:
            return None
        why = f"it holds tables named as this server's ({', '.join(taken)}) that it did not make"
    return (
        f"{why}: DATABASE_URL names another program's database (an application's, as the"
        " seed's .env keeps its database URLs); give this server a database of its own"
        " (CREATE DATABASE calls), or a schema of its own in it (?search_path=<schema> in"
        " DATABASE_URL); nothing was changed in it"
    )


# What the operator does about a migration PostgreSQL refuses for the role or the session it
# was given: the bare refusal named neither (PostgreSQL 15 and later give PUBLIC no CREATE on
# the public schema: every role but the database's owner met "permission denied for schema
# public"; a URL naming a standby met "cannot execute CREATE TABLE in a read-only
# transaction").
_MIGRATE_HINTS: dict[type[BaseException], str] = {
    asyncpg.InsufficientPrivilegeError: (
        " (the role of DATABASE_URL makes and alters the tables: make it the database's"
        " owner, or GRANT CREATE ON SCHEMA <the first of its search_path> TO it, and the"
        " tables' ownership if another role made them; a role that may only read and write"
        " them serves a database migrated already: start this release once with the owner's)"
    ),
    asyncpg.InvalidSchemaNameError: (
        " (no schema of the role's search_path exists: create it, or set search_path in"
        " DATABASE_URL, ?search_path=<schema>, to one that does)"
    ),
    asyncpg.ReadOnlySQLTransactionError: (
        " (the database takes no writes: DATABASE_URL names a standby, or"
        " default_transaction_read_only is on; name the primary, or list the hosts with"
        " ?target_session_attrs=read-write)"
    ),
}


def _why(exc: BaseException) -> str:
    if _unsent(exc):
        return _CUT_OFF
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


# asyncpg's refusal to send on a connection still taking in an error PostgreSQL sent it
# unasked (its FATAL as a fast shutdown or pg_terminate_backend ends the session, read as the
# connection sat between two statements): raised before anything is written to the socket.
_OUT_OF_STEP = "cannot switch to state"
_CUT_OFF = "its session was ended by PostgreSQL (a restart or shutdown, or a terminated backend)"


def _unsent(exc: BaseException) -> bool:
    """asyncpg refused to send the statement (the connection out of step): nothing of it
    reached PostgreSQL. A COMMIT so refused was never sent: the transaction is not written
    (its session ends, and its transaction with it, as the pool terminates the connection)."""
    return isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith(_OUT_OF_STEP)
