-- Campaigns: a list of recipients called with pacing, calling windows and retries; each
-- attempt is a row written before its call is placed; the do-not-call list.
ALTER TABLE calls ADD COLUMN campaign_id TEXT;
CREATE TABLE campaigns (
    campaign_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    client TEXT NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    webhook_url TEXT,
    total INTEGER NOT NULL,
    start_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    next_dial_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    placed INTEGER NOT NULL DEFAULT 0,
    first_dial_at DOUBLE PRECISION,
    last_dial_at DOUBLE PRECISION,
    claimed_by TEXT NOT NULL DEFAULT '',
    claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX campaigns_active ON campaigns (start_at) WHERE status IN ('scheduled', 'running');
CREATE INDEX campaigns_created ON campaigns (created_at);
CREATE TABLE campaign_recipients (
    campaign_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    row_number INTEGER NOT NULL,
    phone_number TEXT NOT NULL,
    fields TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL,
    last_call_id TEXT,
    errors TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (campaign_id, idx)
);
CREATE INDEX campaign_recipients_due ON campaign_recipients (campaign_id, next_at, idx)
    WHERE state IN ('pending', 'waiting_window');
CREATE INDEX campaign_recipients_state ON campaign_recipients (campaign_id, state, idx);
CREATE TABLE campaign_attempts (
    campaign_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    call_id TEXT,
    status TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    PRIMARY KEY (campaign_id, idx, attempt)
);
CREATE INDEX campaign_attempts_open ON campaign_attempts (campaign_id, state)
    WHERE state != 'ended';
CREATE INDEX campaign_attempts_call ON campaign_attempts (call_id);
CREATE TABLE dnc (
    number TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    call_id TEXT,
    added_at DOUBLE PRECISION NOT NULL
);
