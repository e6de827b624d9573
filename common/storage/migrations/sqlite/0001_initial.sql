-- Calls, their event timelines and idempotent answers (the first release's schema).
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    phone_number TEXT NOT NULL,
    caller_name TEXT NOT NULL,
    language TEXT NOT NULL,
    emotion TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    answered INTEGER NOT NULL DEFAULT 0,
    hangup_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    answered_at REAL,
    ended_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_created ON calls (created_at);
CREATE INDEX IF NOT EXISTS calls_status_created ON calls (status, created_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL REFERENCES calls (call_id),
    event_id TEXT,
    kind TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_call ON events (call_id, id);
CREATE TABLE IF NOT EXISTS idempotency (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (client, key)
);
