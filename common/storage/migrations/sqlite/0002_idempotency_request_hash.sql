-- The hash of the request an Idempotency-Key answered, so another body under it is a 409.
ALTER TABLE idempotency ADD COLUMN request_hash TEXT NOT NULL DEFAULT '';
