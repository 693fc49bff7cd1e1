-- A rotated refresh token written ahead and never stored is adopted in one place, the service's
-- `outbox::adopt`, whether a sync's token decision or the outbox worker finds it: the worker now
-- adopts in a transaction scoped to the intent's tenant, under the workspace lock and the row lock
-- like every other writer of the connection, and no longer through a function of its own (which
-- repeated the same update in SQL and could drift from it).
DROP FUNCTION harbor_outbox_adopt(bigint, timestamptz, timestamptz, text);
