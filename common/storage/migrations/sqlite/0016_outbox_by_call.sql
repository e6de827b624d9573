-- A call's events, found by its id: erasing a conversation past CALL_DATA_RETENTION_DAYS
-- rewrites the events that carried it, and without this index each erased call scanned the
-- whole outbox (probe AQ: 335,000 events, 1 s a call, 200 calls a transaction on the
-- database's one thread; GET /calls waited 34 s, start-up took 39 s).
CREATE INDEX IF NOT EXISTS outbox_call ON outbox (call_id);
