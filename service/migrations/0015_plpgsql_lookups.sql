-- The owner's look-ups and the outbox's functions, written again in PL/pgSQL with the same
-- signatures, bodies, volatility and security. Why: PostgreSQL cannot inline a SQL function that
-- is SECURITY DEFINER or has a SET clause, and (up to version 17) its SQL-function executor parses
-- and plans the body again at every call. PL/pgSQL keeps each statement's plan for the session.
-- Measured with pgbench (one client, prepared; benches/README.md): a membership look-up took about
-- 0.45 ms as SQL and 0.27 ms as PL/pgSQL; the service makes several a request, and every outbox
-- worker claims on every pass. `CREATE OR REPLACE` keeps each function's owner and grants. Every
-- column a query reads is qualified, so none can resolve to a PL/pgSQL variable (the RETURNS
-- TABLE columns are variables); the columns an INSERT or an UPDATE names never resolve to one.

CREATE OR REPLACE FUNCTION harbor_membership(p_workspace uuid, p_user uuid)
    RETURNS TABLE (tenant_id uuid, role text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT m.tenant_id, m.role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user;
END
$$;

CREATE OR REPLACE FUNCTION harbor_membership_for_share(p_workspace uuid, p_user uuid)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role text;
BEGIN
    SELECT m.role INTO v_role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user
       AND m.tenant_id = public.harbor_current_tenant()
       FOR SHARE;
    RETURN v_role;
END
$$;

CREATE OR REPLACE FUNCTION harbor_user_tenant(p_user uuid)
    RETURNS uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT u.tenant_id FROM public.users u WHERE u.id = p_user);
END
$$;

CREATE OR REPLACE FUNCTION harbor_outbox_claim(p_now timestamptz, p_lease interval, p_limit integer)
    RETURNS SETOF revocation_outbox
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    UPDATE public.revocation_outbox o
       SET next_attempt_at = p_now + p_lease, attempts = o.attempts + 1
     WHERE o.id IN (SELECT d.id FROM public.revocation_outbox d
                     WHERE d.next_attempt_at <= p_now
                     ORDER BY d.id LIMIT p_limit
                       FOR UPDATE SKIP LOCKED)
    RETURNING o.*;
END
$$;

CREATE OR REPLACE FUNCTION harbor_outbox_done(p_id bigint, p_lease_until timestamptz, p_outcome text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    WITH gone AS (DELETE FROM public.revocation_outbox g
                   WHERE g.id = p_id AND g.next_attempt_at = p_lease_until RETURNING g.*)
    INSERT INTO public.audit_events (tenant_id, workspace_id, action, outcome, request_id, detail)
    SELECT gone.tenant_id, gone.workspace_id, 'revocation.outbox', p_outcome, 'outbox-worker',
           pg_catalog.jsonb_build_object('provider', gone.provider, 'reason', gone.reason,
                                         'attempts', gone.attempts)
      FROM gone;
END
$$;

CREATE OR REPLACE FUNCTION harbor_outbox_retry(p_id bigint, p_lease_until timestamptz, p_error text, p_next timestamptz)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE public.revocation_outbox r
       SET last_error = pg_catalog.left(p_error, 200), next_attempt_at = p_next
     WHERE r.id = p_id AND r.next_attempt_at = p_lease_until;
END
$$;
