"""The call store the settings select: PostgreSQL with DATABASE_URL, else SQLite."""

from __future__ import annotations

from common.settings import Settings
from common.storage.sql import SqlCallStore


async def open_store(settings: Settings, *, migrate: bool = True) -> SqlCallStore:
    """Open (and migrate) the call store the settings select; DatabaseError if it cannot be
    opened or used. `migrate` False: a tool that only reads (`agent describe`) never changes
    the schema a running server uses; another version than this code's is a DatabaseError."""
    store: SqlCallStore
    if settings.database_url is not None:
        from common.storage.postgres import PostgresCallStore

        store = await PostgresCallStore.open(
            settings.database_url,
            pool_size=settings.database_pool_size,
            instance=settings.instance_name,
            migrate=migrate,
        )
    else:
        from common.storage.sqlite import SqliteCallStore

        store = await SqliteCallStore.open(
            settings.calls_db_path, instance=settings.instance_name, migrate=migrate
        )
    store.lease_s = settings.claim_lease_s
    store.sandbox_time_scale = settings.time_scale
    store.enforce_calling_hours = settings.campaign_enforce_calling_hours
    return store
