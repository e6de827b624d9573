-- The events not dispatched yet, oldest first: what the reaper's pass (and a start) takes over
-- from a server that stopped holding them. SQLite read the whole outbox in id order for that
-- (`ORDER BY id LIMIT`), its index by lease (outbox_pending) left unused, every pass even when
-- nothing was left undispatched (probe AS: 346,000 events, 150-200 ms each 30 s, every request
-- waiting on the database's one thread). PostgreSQL plans that query by outbox_pending already.
CREATE INDEX IF NOT EXISTS outbox_undispatched ON outbox (id) WHERE dispatched_at IS NULL;
