-- What the agent reports about its call: the answering-machine verdict, who ended the call,
-- the final report (transcript, summary, success, extracted fields, usage), each report once.
ALTER TABLE calls ADD COLUMN amd TEXT;
ALTER TABLE calls ADD COLUMN ended_by TEXT;
ALTER TABLE calls ADD COLUMN report TEXT;
ALTER TABLE calls ADD COLUMN report_at REAL;
ALTER TABLE calls ADD COLUMN data_erased_at REAL;
CREATE INDEX calls_ended ON calls (ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE reports (
    call_id TEXT NOT NULL REFERENCES calls (call_id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (call_id, seq)
);
