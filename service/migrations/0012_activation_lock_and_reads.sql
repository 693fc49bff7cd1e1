-- An activation takes the workspace lock and makes its two reads (an earlier activation, the
-- entitlement) in one round trip instead of three. What runs between the lock and the commit is
-- the critical section every other request of the workspace waits behind: one round trip less
-- there is one wait less for each of them (a hot workspace's activations are that section, end to
-- end). The reads stay after the lock: each statement of a VOLATILE function takes a snapshot of
-- its own (READ COMMITTED), so they see what the lock's previous holder committed — which one
-- statement holding both the lock and the reads would not (its snapshot predates its lock wait).
--
-- SECURITY INVOKER (the default): the reads go through the caller's row-level security, scoped to
-- its tenant like any other statement of the request. The lock key comes from the caller
-- (`locks.rs` derives it, the one place keys are derived).
CREATE FUNCTION harbor_lock_for_activation(p_classid integer, p_objid integer, p_workspace uuid,
                                           OUT activated_at timestamptz, OUT entitled boolean)
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_classid, p_objid);
    SELECT a.activated_at INTO activated_at FROM public.workspace_activations a
     WHERE a.workspace_id = p_workspace;
    SELECT e.active INTO entitled FROM public.entitlements e WHERE e.workspace_id = p_workspace;
END
$$;

REVOKE ALL ON FUNCTION harbor_lock_for_activation(integer, integer, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_lock_for_activation(integer, integer, uuid) TO harbor_app;
