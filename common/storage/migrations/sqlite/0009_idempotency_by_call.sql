-- A call never dialled frees the Idempotency-Key bound to it, found by its call id (the
-- placement that failed, or the reaper settling a call whose server stopped before dialling).
CREATE INDEX IF NOT EXISTS idempotency_call ON idempotency (call_id);
