-- Customer webhooks: the URL a call's events go to (its own, else the server's default when
-- it was placed), and one delivery per (event, URL), created with the event.
ALTER TABLE calls ADD COLUMN webhook_url TEXT;
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    url TEXT NOT NULL,
    webhook_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_call_url ON deliveries (call_id, url, id);
-- Which server holds a claim: a restarted server takes its own claims back at once (the
-- others wait for the lease to run out).
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
