"""Versioned, forward-only schema migrations, kept as files: `<backend>/NNNN_name.sql`.

Each backend applies the files whose number is above the database's version, in order, in
one transaction under its own lock at start-up (SQLite: the writer lock; PostgreSQL: an
advisory lock), so two servers starting at once migrate once. A file is never edited once
released: a change is a new file.
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
    """Every migration of `backend` ("sqlite" or "postgres"), in order, numbered 1, 2, ..."""
    found = []
    for entry in resources.files(__package__).joinpath(backend).iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is not None:
            statements = split_statements(entry.read_text(encoding="utf-8"))
            found.append(Migration(int(match.group(1)), match.group(2), statements))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations are not numbered 1..n: {found}")
    return tuple(found)
