-- An event's deliveries: the retention purge asks, for each old event, whether any of its
-- deliveries is still pending, and deletes them by event. Without this index each question
-- read every delivery: 2,000 old events among 100,000 deliveries held the writer 15.7 s
-- (4 ms with it).
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
