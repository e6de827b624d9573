-- Where a delivery's current round of attempts began: its attempts when it was last
-- redelivered. The retry schedule counts from there: counted from its first attempt ever, a
-- failed delivery redelivered got one attempt and failed again, and one that had been
-- delivered waited 30 s or 10 min for its first retry instead of 5 s.
ALTER TABLE deliveries ADD COLUMN round_start INTEGER NOT NULL DEFAULT 0;
