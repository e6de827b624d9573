"""Versioned, forward-only schema migrations, kept as files: `<backend>/NNNN_name.sql`.

Each backend applies the files whose number is above the database's version, in order, in
one transaction under its own lock at start-up (SQLite: the writer lock; PostgreSQL: an
advisory lock), so two servers starting at once migrate once. A file is never edited once
released: a change is a new file. Numbers only grow; a gap is allowed (a number reserved for
another branch's migration), and the database's version is the last number applied.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> tuple[str, ...]:
    """The statements of a migration file (`--` comments dropped; `;` ends a statement)."""
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return tuple(s.strip() for s in text.split(";") if s.strip())


@functools.cache
def migrations_for(backend: str) -> tuple[Migration, ...]:
    """Every migration of `backend` ("sqlite" or "postgres"), in order of their numbers."""
    found = []
    for entry in resources.files(__package__).joinpath(backend).iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is not None:
            statements = split_statements(entry.read_text(encoding="utf-8"))
            found.append(Migration(int(match.group(1)), match.group(2), statements))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or (versions and versions[0] < 1):
        raise RuntimeError(f"{backend} migrations are not numbered 1, 2, ... once each: {found}")
    return tuple(found)


# Numbers two migrations of today took from a migration that was backed out. A release of
# 2026-12-04 (a49e7b0 to 0f985a5) numbered its own `line_joined` (the column
# calls.line_joined_at) 16 on SQLite and 11 on PostgreSQL, and the outbox index after it 17 and
# 12; backing it out gave those numbers to today's outbox_by_call and outbox_undispatched
# (SQLite) and outbox_by_call and campaign_uploads (PostgreSQL). A database that release
# migrated is past them by number, so they were skipped: its outbox lacks an index (an
# erasure or the reaper's pass read the whole outbox), and on PostgreSQL at 12 the table
# campaign_uploads is missing (every POST /campaigns failed). Each backend applies these
# again where that release's mark is found; their statements may run twice (IF NOT EXISTS).
RENUMBERED = {"sqlite": (16, 17), "postgres": (11, 12)}
BACKED_OUT = ("calls", "line_joined_at")  # the mark: the column the backed-out one added


def renumbered(backend: str) -> tuple[Migration, ...]:
    """This code's migrations whose numbers the backed-out release used for others."""
    return tuple(m for m in migrations_for(backend) if m.version in RENUMBERED[backend])


def describe(migrations: tuple[Migration, ...]) -> str:
    """'0016 (outbox_by_call), 0017 (outbox_undispatched)': as an operator reads a list."""
    return ", ".join(f"{m.version:04d} ({m.name})" for m in migrations)
