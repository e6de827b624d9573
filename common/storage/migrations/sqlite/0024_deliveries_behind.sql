-- A pending delivery that waits behind an earlier pending one of its call and URL (1): it
-- cannot be sent before that one is over, and the claims and the look for what is due next
-- read only the others, by their own index. Each read every waiting delivery instead (due
-- since its event): with a receiver down for hours, 20,000 calls' later events behind their
-- first one's retry made each claim read 80,000 rows (0.3 s), and every new event, every
-- call placed, waited for it. 0 is never wrong (the claims check it again); 1 is set only
-- where an earlier pending delivery is.
ALTER TABLE deliveries ADD COLUMN behind INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET behind = 1 WHERE state = 'pending' AND EXISTS (SELECT 1 FROM deliveries e
    WHERE e.call_id = deliveries.call_id AND e.url = deliveries.url AND e.state = 'pending'
    AND e.id < deliveries.id);
CREATE INDEX deliveries_due_heads ON deliveries (next_attempt_at) WHERE state = 'pending' AND behind = 0;
-- The first claim to run out among those held (when a dead server's deliveries are taken
-- over), found by its own index: it read every pending delivery (0.1 s with 80,000) at each
-- look for what is due next.
CREATE INDEX deliveries_claimed ON deliveries (claimed_until) WHERE state = 'pending';
