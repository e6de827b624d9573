"""A DATABASE_URL with several hosts, a bracketed IPv6 one after another
(`postgresql://app:pw@h1:5432,[::1]:5433/calls`, as libpq and asyncpg take it), on the
Pythons of 2025 on: their urlsplit refuses it ("Invalid IPv6 URL": CPython 3.11.12, 3.12.9,
3.13.2, gh-105704; Debian 12's python3 3.11.2 has the change). Seen with `make test` as an
ordinary user with Debian's python3: the server stopped with "DATABASE_URL does not parse
(percent-encode / # ? @ : in the user name and password)", the password blamed, and its logs
named the URL as "DATABASE_URL" instead of showing it masked. Those Pythons are emulated here
(this one may predate them); on one of them the emulation changes nothing."""

from __future__ import annotations

import urllib.parse
from urllib.parse import SplitResult, urlsplit

import pytest

from common.storage.base import DatabaseError
from common.storage.postgres import PostgresCallStore, masked
from tests.processes import free_port

_this_pythons_urlsplit = urllib.parse.urlsplit


def _urlsplit_of_2025(url: str, scheme: str = "", allow_fragments: bool = True) -> SplitResult:
    """urlsplit as the Pythons of 2025 on have it: no text before a bracketed host."""
    parts = _this_pythons_urlsplit(url, scheme, allow_fragments)
    before, bracket, _rest = parts.netloc.rpartition("@")[2].partition("[")
    if bracket and before:
        raise ValueError("Invalid IPv6 URL")
    return parts


@pytest.fixture(autouse=True)
def pythons_of_2025(monkeypatch: pytest.MonkeyPatch) -> None:
    # asyncpg's urlparse calls urllib.parse.urlsplit; the store imported its own name
    monkeypatch.setattr(urllib.parse, "urlsplit", _urlsplit_of_2025)
    monkeypatch.setattr("common.storage.postgres.urlsplit", _urlsplit_of_2025)
    with pytest.raises(ValueError, match="Invalid IPv6 URL"):
        urllib.parse.urlparse("postgresql://u@h1,[::1]/db")


def _with_second_host(dsn: str, second: str) -> str:
    hosts = urlsplit(dsn).netloc.rpartition("@")[2]
    return dsn.replace(f"@{hosts}/", f"@{hosts},{second}/")


def test_such_a_url_is_shown_masked_not_named() -> None:
    url = "postgresql://app:TopSecret9@h1:5432,[::1]:5433/calls?target_session_attrs=rw"
    assert masked(url) == "postgresql://app:***@h1:5432,[::1]:5433/calls?target_session_attrs=rw"
    # a password's unencoded `@` in such a URL: still named, not quoted
    assert masked("postgresql://app:Top@Secret9@h1,[::1]/db") == "postgresql://app:***@h1,[::1]/db"


async def test_the_store_connects_through_such_a_url(postgres_dsn: str) -> None:
    dsn = _with_second_host(postgres_dsn, f"[::1]:{free_port()}")
    assert ",[::1]:" in dsn
    store = await PostgresCallStore.open(dsn, pool_size=1)  # "does not parse" before
    try:
        assert await store.get_call("call-000000000000") is None
    finally:
        await store.close()


async def test_a_query_host_and_the_urls_hosts_connect_as_asyncpg_reads_them(
    postgres_dsn: str,
) -> None:
    """The URL's hosts come before a `host=` of its query, as asyncpg reads it: a closed
    port in the query changes nothing."""
    dsn = _with_second_host(postgres_dsn, f"[::1]:{free_port()}")
    store = await PostgresCallStore.open(f"{dsn}?host=127.0.0.1:{free_port()}", pool_size=1)
    await store.close()


async def test_hosts_that_do_not_answer_are_said_with_the_url_masked(postgres_dsn: str) -> None:
    closed = free_port()
    dsn = f"postgresql://app:TopSecret9@127.0.0.1:{closed},[::1]:{free_port()}/calls"
    with pytest.raises(DatabaseError) as raised:
        await PostgresCallStore.open(dsn, pool_size=1)
    said = str(raised.value)
    assert f"cannot connect to postgresql://app:***@127.0.0.1:{closed},[::1]:" in said, said
    assert "TopSecret9" not in said and "does not parse" not in said
