-- When the callee's leg left an answered call: a hang-up through the API after that does not
-- turn a call the callee ended into a canceled one (the room may stay up 20 s longer).
ALTER TABLE calls ADD COLUMN IF NOT EXISTS callee_left_at DOUBLE PRECISION;
