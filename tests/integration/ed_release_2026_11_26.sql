PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE calls (
    call_id TEXT PRIMARY KEY,
    phone_number TEXT NOT NULL,
    caller_name TEXT NOT NULL,
    language TEXT NOT NULL,
    emotion TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    answered INTEGER NOT NULL DEFAULT 0,
    hangup_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    answered_at REAL,
    ended_at REAL,
    updated_at REAL NOT NULL
);
INSERT INTO calls VALUES('call-ab30edb86269','+14155557760','Alice Smith','en','Calm','dialing',NULL,NULL,0,0,1796521158.399400711,NULL,NULL,1796521158.399400711);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL REFERENCES calls (call_id),
    event_id TEXT,
    kind TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
INSERT INTO events VALUES(1,'call-ab30edb86269',NULL,'created',NULL,'dialing','{"phone": "+1••••••7760"}',1796521158.399400711);
INSERT INTO events VALUES(2,'call-ab30edb86269',NULL,'dialed',NULL,NULL,'{"dispatch_id": "AD_Al0VBg75ZfrC", "participant_id": "PA_6EeTUnLU2gDb"}',1796521158.4062590598);
INSERT INTO events VALUES(3,'call-ab30edb86269','EV_a6CkToiQ5KTf','room_started',NULL,NULL,'{}',1796521158.4065117836);
INSERT INTO events VALUES(4,'call-ab30edb86269','EV_ZEPGUAPuSBEi','participant_joined',NULL,NULL,'{"sip_call_status": "dialing"}',1796521158.4086689948);
INSERT INTO events VALUES(5,'call-ab30edb86269','EV_VoC7WayUyqZ5','track_published',NULL,NULL,'{}',1796521158.4104409217);
CREATE TABLE idempotency (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    request_hash TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (client, key)
);
INSERT INTO idempotency VALUES('127.0.0.1','50ac93f41009bb5828fbeb9b39ca5129a5888ba493196a343d69c38b2df5a412',200,'{"status": "success", "call_id": "call-ab30edb86269", "room": "call-ab30edb86269", "call_status": "dialing"}',1796521158.4077966212,'16c3ead457128b48a46c7dc3df18f0c1352e7793188dfbd5dedcfdf2ad7264cd');
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('events',5);
CREATE INDEX calls_created ON calls (created_at);
CREATE INDEX calls_status_created ON calls (status, created_at);
CREATE UNIQUE INDEX events_event_id ON events (event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX events_call ON events (call_id, id);
COMMIT;
PRAGMA user_version=2;
