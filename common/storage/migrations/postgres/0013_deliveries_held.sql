-- A call placed through the API keeps its customer webhook deliveries unmade until its dial
-- has started (1): a call refused before it (LiveKit unreachable, a number listed meanwhile)
-- was answered an error without its id, and its receiver got call.dialing and call.ended
-- of a call it never placed. Rows from before stay 0: their deliveries were made.
ALTER TABLE calls ADD COLUMN deliveries_held INTEGER NOT NULL DEFAULT 0;
