-- Per-call limits and config snapshot; room_finished awaiting its grace; the dial marker;
-- the Idempotency-Key recorded with its call before anything is dialled; readiness probes.
ALTER TABLE calls ADD COLUMN ringing_timeout_s INTEGER;
ALTER TABLE calls ADD COLUMN max_duration_s INTEGER;
ALTER TABLE calls ADD COLUMN config TEXT;
ALTER TABLE calls ADD COLUMN room_finished_at REAL;
ALTER TABLE calls ADD COLUMN dial_started_at REAL;
CREATE INDEX IF NOT EXISTS calls_room_finished ON calls (room_finished_at)
    WHERE room_finished_at IS NOT NULL;
CREATE TABLE idempotency_v3 (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    call_id TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (client, key)
);
INSERT INTO idempotency_v3
    SELECT client, key, request_hash, COALESCE(json_extract(body, '$.call_id'), ''),
           status, body, created_at
    FROM idempotency;
DROP TABLE idempotency;
ALTER TABLE idempotency_v3 RENAME TO idempotency;
CREATE TABLE readiness (instance TEXT PRIMARY KEY, at REAL NOT NULL);
