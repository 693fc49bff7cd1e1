-- The two SECURITY DEFINER functions that write audit rows run with the search path the service's
-- sessions have (`public`, with `pg_catalog` searched first as it always is when not named), so
-- that the foreign-key check of the row they write shares its plan with the requests' own.
--
-- PostgreSQL keeps one plan per session for each foreign key's check (`SELECT 1 FROM ONLY tenants
-- x WHERE id = $1 FOR KEY SHARE OF x`) and plans it again whenever it runs under a search path
-- other than the one it was planned under. `harbor_outbox_done` writes an audit row, as the
-- requests' statements do, so each disconnect's settlement switched the check of `audit_events`'
-- tenant to the function's path and the next request's audit row on that session switched it
-- back: `pg_stat_statements` under 100 goose users counted 11,422 plans of that check in 38,189
-- calls, about two a flow. Alternating a plain insert and a function's insert on one session: 8
-- plans in 8 calls under `pg_catalog, pg_temp`, 1 under `public, pg_temp`.
--
-- The other definer functions only read, and keep `pg_catalog, pg_temp` (migration 0006: nothing
-- is resolved through `public`). These two name every table `public.` as before, `pg_catalog` is
-- still searched first and `pg_temp` last, and only the database's owner, who owns them, may
-- create objects in `public` (0006 revokes CREATE from everyone else).
ALTER FUNCTION harbor_outbox_done(bigint, timestamptz, text) SET search_path = public, pg_temp;
ALTER FUNCTION harbor_outbox_adopt(bigint, timestamptz, timestamptz, text)
    SET search_path = public, pg_temp;
