-- Whose call it is and whether it counts against the rate (admission in the database, so it
-- holds across servers); the transactional outbox of call events.
ALTER TABLE calls ADD COLUMN client TEXT NOT NULL DEFAULT '';
ALTER TABLE calls ADD COLUMN counts_for_rate INTEGER NOT NULL DEFAULT 1;
CREATE INDEX calls_client_created ON calls (client, created_at);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    type TEXT NOT NULL,
    from_status TEXT,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    claimed_until REAL NOT NULL,
    dispatched_at REAL
);
CREATE INDEX outbox_pending ON outbox (claimed_until) WHERE dispatched_at IS NULL;
CREATE INDEX outbox_dispatched ON outbox (dispatched_at) WHERE dispatched_at IS NOT NULL;
