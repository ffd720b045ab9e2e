-- A key's row is inserted when its request claims it, then updated once with the response
-- (status, body: columns no index covers). With room left on each page the update is a HOT
-- update: the new version stays on the same page and no index gets a new entry.
ALTER TABLE platform_idempotency_keys SET (fillfactor = 50);
