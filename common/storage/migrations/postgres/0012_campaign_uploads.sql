-- A campaign being created: its recipients are stored a batch a transaction before its row
-- (nothing reads a campaign's recipients without it), and this row says whose they are
-- until the campaign's own transaction takes it (one transaction of 100,000 rows held
-- SQLite's one thread ~2 s). A row not touched for long (its server stopped mid-upload), or
-- marked 0 (its upload failed), is an upload given up: the reaper removes its recipients,
-- then it.
CREATE TABLE IF NOT EXISTS campaign_uploads (
    campaign_id TEXT PRIMARY KEY,
    touched_at DOUBLE PRECISION NOT NULL
);
