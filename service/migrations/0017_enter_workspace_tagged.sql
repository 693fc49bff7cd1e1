-- A member's request tags its transaction in its first prepared statement, not in the text of its
-- BEGIN.
--
-- Until now a member's request opened its transaction with one simple query, `BEGIN; SELECT
-- set_config('application_name', '<tag>', true)`, and then called `harbor_enter_workspace`. The
-- simple protocol cannot be prepared: PostgreSQL parsed, analysed and planned that SELECT at every
-- request. This overload takes the tag as a parameter and sets it before anything else, so the
-- request's `BEGIN` is bare and no round trip is added. Measured with pgbench (prepared, the
-- request pool's role; benches/README.md), `BEGIN`, the membership entered and `COMMIT`: 17,300
-- transactions a second before and 20,300 after at 20 clients on both cores, 0.35 ms before and
-- 0.25 ms after for one client.
--
-- The tag is set first, before the membership's lock is asked for: the harness finds a request's
-- backend in `pg_stat_activity` by its `application_name`, and a backend that waits on a lock
-- must already carry it. `set_config(..., true)` inside a function whose `SET` clause names only
-- `search_path` lasts until the transaction ends, as the tenant set below always has.
--
-- The two-argument function stays, unchanged, while replicas of the release before may still call
-- it. The body is written out again rather than called: a nested SECURITY DEFINER call is a second
-- PL/pgSQL frame and a second `SET search_path` on every request (see migration 0016 on the READ
-- COMMITTED check, which is written out for the same reason).
CREATE FUNCTION harbor_enter_workspace(p_workspace uuid, p_user uuid, p_tag text)
    RETURNS TABLE (tenant_id uuid, role text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM set_config('application_name', p_tag, true);
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'a membership is held only under READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(public.harbor_membership_lock_key(p_workspace, p_user));
    -- A statement of its own, after the lock: its snapshot sees a change that committed while the
    -- lock was awaited.
    SELECT m.tenant_id, m.role INTO tenant_id, role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user
       AND (public.harbor_current_tenant() IS NULL OR m.tenant_id = public.harbor_current_tenant());
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM set_config('harbor.tenant_id', tenant_id::text, true);
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION harbor_enter_workspace(uuid, uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_enter_workspace(uuid, uuid, text) TO harbor_app;
