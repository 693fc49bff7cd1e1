-- The callback's store in the write-ahead's own transaction, when nothing has to wait for it.
--
-- A callback's fresh grant must be durable before anything can wait: a replica that dies while the
-- callback waits for a lock would otherwise leave a live grant that no row and no intent holds.
-- So the callback writes the grant ahead (an outbox intent, committed) and only then stores it
-- under the workspace and row locks, in a second transaction. When every lock the store needs is
-- free at once, nothing waits: the store can then be made in the write-ahead's transaction itself,
-- and its commit makes the grant durable in the row instead of in an intent. The service tries
-- every lock without waiting; any that is held, and it writes ahead as before.
--
-- The membership's hold (migration 0016) is the one lock of the store that was only reachable
-- through a waiting function. This one tries it: `held` is false when a change to the membership
-- holds its key (the hold was not taken, and `role` is not read); otherwise the hold is taken, as
-- `harbor_membership_held` takes it, and `role` is the caller's role in the transaction's tenant,
-- or NULL. Under READ COMMITTED only, for the reason migration 0016 gives.
CREATE FUNCTION harbor_membership_try_hold(p_workspace uuid, p_user uuid,
                                           OUT held boolean, OUT role text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'a membership is held only under READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'feature_not_supported';
    END IF;
    held := pg_try_advisory_xact_lock_shared(public.harbor_membership_lock_key(p_workspace, p_user));
    IF NOT held THEN
        RETURN;
    END IF;
    -- A statement of its own, after the lock: its snapshot sees a change that committed before.
    SELECT m.role INTO role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user
       AND m.tenant_id = public.harbor_current_tenant();
END
$$;

REVOKE ALL ON FUNCTION harbor_membership_try_hold(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_membership_try_hold(uuid, uuid) TO harbor_app;

-- A callback whose store made at once lost its commit's reply, and could not learn what became of
-- its transaction, leaves the grant to the outbox through an intent written then. The store may
-- have committed: the worker then finds the grant in its row and drops the intent instead of
-- revoking a stored grant. Only a callback's fresh grant can be judged so — its grant id is new,
-- so a row holding it holds this very grant — which this column says; a rotated refresh token
-- keeps its grant's id (an intent written by a release before migration 0010 looks like a
-- callback's in every other column).
ALTER TABLE revocation_outbox ADD COLUMN fresh_grant boolean NOT NULL DEFAULT false;
