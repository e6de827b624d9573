-- An undispatched event's take-overs (its claim ran out: its server stopped, or one of its
-- subscribers kept failing it), and when it was given up (after MAX_TAKEOVERS of them: kept,
-- undispatched, never claimed again). One a subscriber always failed was given to every
-- subscriber again each time its lease ran out, for good.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS takeovers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS given_up_at DOUBLE PRECISION;
