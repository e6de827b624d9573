-- Which server (Settings.instance_name: host name, port and listen address) placed the call,
-- and which run of it (a random id drawn at each start). A call recorded but not dialled when
-- its server was killed waited a minute (PLACEMENT_BOUND_S) before it was settled, or placed
-- again for a campaign, though the same server restarted at once: it could not tell its own
-- earlier run's placements from another live server's. It now settles the undialled calls
-- that name it and another run at once. Rows from before stay NULL: they wait the minute.
ALTER TABLE calls ADD COLUMN placed_by TEXT;
ALTER TABLE calls ADD COLUMN placed_run TEXT;
