"""The hosts a PostgreSQL not answering is named by (hosts_of): each host with its port,
libpq's defaults where the URL gives none, and nothing of its user, password or database."""

from __future__ import annotations

import pytest

from common.storage.postgres import hosts_of


@pytest.mark.parametrize(
    ("dsn", "named"),
    [
        ("postgresql://calls:s3cret@db.example:6543/calls", "db.example:6543"),
        ("postgresql://calls:s3cret@db1,[::1]:5433/calls", "db1:5432,[::1]:5433"),
        ("postgresql://calls:s3cret@/calls", "localhost:5432"),
        ("postgresql:///calls?host=db.internal&port=7000&password=s3cret", "db.internal:7000"),
        ("postgresql://calls:s3/cret@db/calls", "DATABASE_URL"),  # does not parse: unquoted
    ],
)
def test_hosts_and_ports_only(dsn: str, named: str) -> None:
    assert hosts_of(dsn) == named
    assert "s3" not in hosts_of(dsn)
