-- A number's calls, found by their number: an erasure on request of every call to a number
-- (POST /calls/erase) otherwise scanned the whole calls table in its write transaction
-- (300,000 calls: 0.1-0.2 s that every other write waited for, a second or more at millions).
CREATE INDEX IF NOT EXISTS calls_phone ON calls (phone_number);
