-- A request's hold on its caller's membership is an advisory lock, not a row lock.
--
-- Until now every member's request read its membership row FOR SHARE (`harbor_enter_workspace`,
-- and the callback's store through `harbor_membership_for_share`), so that a removal or a role
-- change either committed before and was seen, or waited for the request's commit. A row lock is
-- a write: PostgreSQL records it in the row itself (its page dirtied, a WAL record), and a row
-- locked by two transactions at once gets a multixact, re-created with every locker that joins.
-- Fifty concurrent requests of one caller to one workspace (a retry storm, the bench's hot
-- workspace) kept fifty lockers on one row: measured with pgbench (50 clients, prepared, the
-- activation's statements on one workspace; benches/README.md), the FOR SHARE read cost a quarter
-- of the throughput of the same read without it, and it spends multixact space a busy database
-- has to vacuum back.
--
-- The same guarantee, kept by a lock that writes nothing: a request takes a *shared*
-- transaction-scoped advisory lock on its caller's membership (`harbor_membership_lock_key`: the
-- workspace and the user), and only then reads the row; every change to a membership row — an
-- UPDATE (an upsert's included) or a DELETE — takes the same key *exclusively* first (the trigger
-- below, which fires in every session, replication's and restores' included: `ENABLE ALWAYS`). So a change either committed before the request's lock
-- (the read, whose snapshot is taken after the lock, sees it) or waits for the request's commit,
-- and many requests share the key without waiting for each other. A session only ever locks the
-- key of its own caller's membership (the user is the token's subject), so it can delay no one
-- else's change; a collision of two keys only makes a change wait for a request it did not need
-- to.
--
-- The key is derived here only, in SQL, by both sides, in the one server: it is the one-bigint
-- form of advisory key, which PostgreSQL keeps apart from the two-integer form of the workspace
-- lock (`locks::WORKSPACE_LOCK_NAMESPACE`; `objsubid` 1 and 2 in `pg_locks`): the two never
-- collide.
--
-- The guarantee needs READ COMMITTED, the service's level: the read after the lock must take a
-- snapshot of its own. Under REPEATABLE READ or SERIALIZABLE the transaction's snapshot predates
-- the lock wait and the read could be stale where `FOR SHARE` raised a serialization error, so
-- both functions refuse to run there. The check is written out in each: as a function of its own,
-- its call cost 5–10 % of a hot workspace's throughput under pgbench.

-- SQL without a `SET` clause and every name qualified, so that PostgreSQL inlines it into the
-- statements that call it instead of planning its body at every call (migration 0015).
CREATE FUNCTION harbor_membership_lock_key(p_workspace uuid, p_user uuid)
    RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.hashtextextended(
        p_workspace::text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) p_user::text,
        1212306001)
$$;


CREATE OR REPLACE FUNCTION harbor_enter_workspace(p_workspace uuid, p_user uuid)
    RETURNS TABLE (tenant_id uuid, role text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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

-- `harbor_membership_for_share`'s successor for the callback's store (its name said FOR SHARE):
-- the caller's role in the workspace, read after the shared lock, in the transaction's own tenant
-- only. Returns the role, or NULL. The old function stays, unchanged, while replicas of the
-- release before may still call it (their row lock still makes a change wait: the change's
-- UPDATE or DELETE waits for it after the trigger's lock); a later migration drops it.
CREATE FUNCTION harbor_membership_held(p_workspace uuid, p_user uuid)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role text;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'a membership is held only under READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(public.harbor_membership_lock_key(p_workspace, p_user));
    SELECT m.role INTO v_role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user
       AND m.tenant_id = public.harbor_current_tenant();
    RETURN v_role;
END
$$;

-- The key function stays executable by anyone (a hash of the ids it is given): the trigger runs
-- as whoever changes a membership.
REVOKE ALL ON FUNCTION harbor_membership_held(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_membership_held(uuid, uuid) TO harbor_app;

-- A change to a membership waits for every request that holds it.
CREATE FUNCTION harbor_membership_change_waits() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(public.harbor_membership_lock_key(OLD.workspace_id, OLD.user_id));
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER memberships_change_waits_for_requests BEFORE UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION harbor_membership_change_waits();
-- Also where `session_replication_role` is `replica` (logical replication's apply, a restore with
-- triggers disabled). The table's owner can still disable it (`ALTER TABLE ... DISABLE TRIGGER
-- ALL`): like migration 0014's trigger, it holds against the application, not against the owner.
ALTER TABLE memberships ENABLE ALWAYS TRIGGER memberships_change_waits_for_requests;
