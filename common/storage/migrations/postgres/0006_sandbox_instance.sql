-- The server (Settings.sandbox_owner: host name, port and listen address) whose embedded
-- sandbox holds the call's room; NULL when the room is on a real LiveKit. The sandbox's rooms
-- end with its process, and no webhook ever comes for them: when that server starts again it
-- settles the calls it left live
-- (and only those: other servers on the same database keep theirs). Read once as a server
-- starts, among the few live calls, which calls_status_created finds: no index of its own.
ALTER TABLE calls ADD COLUMN IF NOT EXISTS sandbox_instance TEXT;
