-- A number's campaign recipients, found by their number: an erasure on request of every call
-- to a number (POST /calls/erase) otherwise read every recipient of every campaign
-- (300,000 recipients: a full scan each erasure).
CREATE INDEX IF NOT EXISTS campaign_recipients_phone ON campaign_recipients (phone_number);
