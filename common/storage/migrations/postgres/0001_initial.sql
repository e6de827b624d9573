-- The whole schema as of SQLite's migration 6 (PostgreSQL started there). Times are unix
-- seconds (double precision), flags integers and JSON text, as on SQLite, so the same SQL
-- (common/storage/programs.py) runs on both.
CREATE TABLE calls (
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
    created_at DOUBLE PRECISION NOT NULL,
    answered_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL,
    ringing_timeout_s INTEGER,
    max_duration_s INTEGER,
    config TEXT,
    room_finished_at DOUBLE PRECISION,
    dial_started_at DOUBLE PRECISION,
    client TEXT NOT NULL DEFAULT '',
    counts_for_rate INTEGER NOT NULL DEFAULT 1,
    amd TEXT,
    ended_by TEXT,
    report TEXT,
    report_at DOUBLE PRECISION,
    data_erased_at DOUBLE PRECISION,
    webhook_url TEXT
);
CREATE INDEX calls_created ON calls (created_at);
CREATE INDEX calls_status_created ON calls (status, created_at);
CREATE INDEX calls_room_finished ON calls (room_finished_at) WHERE room_finished_at IS NOT NULL;
CREATE INDEX calls_client_created ON calls (client, created_at);
CREATE INDEX calls_ended ON calls (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls (call_id),
    event_id TEXT,
    kind TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT,
    detail TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX events_event_id ON events (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_call ON events (call_id, id);

CREATE TABLE idempotency (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    call_id TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (client, key)
);

CREATE TABLE readiness (instance TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL);

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    call_id TEXT NOT NULL,
    type TEXT NOT NULL,
    from_status TEXT,
    data TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    claimed_until DOUBLE PRECISION NOT NULL,
    claimed_by TEXT NOT NULL DEFAULT '',
    dispatched_at DOUBLE PRECISION
);
CREATE INDEX outbox_pending ON outbox (claimed_until) WHERE dispatched_at IS NULL;
CREATE INDEX outbox_dispatched ON outbox (dispatched_at) WHERE dispatched_at IS NOT NULL;

CREATE TABLE reports (
    call_id TEXT NOT NULL REFERENCES calls (call_id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (call_id, seq)
);

CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    event_id BIGINT NOT NULL,
    call_id TEXT NOT NULL,
    url TEXT NOT NULL,
    webhook_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    claimed_by TEXT NOT NULL DEFAULT '',
    last_status INTEGER,
    last_error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_call_url ON deliveries (call_id, url, id);
