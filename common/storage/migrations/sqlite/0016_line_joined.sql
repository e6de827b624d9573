-- When the callee's line (LiveKit's SIP participant) first showed in the call's room: it joins
-- before it dials, so a room that finished without it never rang anyone (a dial that never
-- reached LiveKit, its server killed in between). Calls before this version count as joined
-- once dialled: their events were not kept so.
ALTER TABLE calls ADD COLUMN line_joined_at REAL;
UPDATE calls SET line_joined_at = dial_started_at WHERE dial_started_at IS NOT NULL;
