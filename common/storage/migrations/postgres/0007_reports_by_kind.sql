-- A call's reports by kind: how many turns it holds (each turn report counts them; read
-- from the rows, 2 ms a count on a call of 2,000 long turns) and whether it was reported
-- answered, a verdict or a do-not-call request before.
CREATE INDEX IF NOT EXISTS reports_by_kind ON reports (call_id, kind);
