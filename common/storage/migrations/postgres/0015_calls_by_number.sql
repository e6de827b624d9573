-- A number's calls, found by their number: an erasure on request of every call to a number
-- (POST /calls/erase) otherwise scanned the whole calls table, its rows locked as found.
CREATE INDEX IF NOT EXISTS calls_phone ON calls (phone_number);
