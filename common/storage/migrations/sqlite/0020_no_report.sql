-- A call that ended with no agent to report on it (its agent's dispatch failed, or no agent
-- joined its room) is marked (1): its report_status is `unavailable` at once, and its
-- call.report event says so with its call.ended, rather than `pending` for 10 minutes and no
-- event ever. Rows from before stay 0: they read unavailable 10 minutes after their end.
ALTER TABLE calls ADD COLUMN no_report INTEGER NOT NULL DEFAULT 0;
