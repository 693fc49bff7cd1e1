-- A settlement says whether it found its intent: `harbor_outbox_done_found` and
-- `harbor_outbox_retry_found` do what `harbor_outbox_done` and `harbor_outbox_retry` did, and
-- return true when the intent was still there under the caller's lease (deleted, or put off to
-- its next attempt), false when it was not: a sending of the same settlement had already settled
-- it, or the lease had run out and a worker had taken it.
--
-- Why: a request settles its own delivery in one statement run alone that also writes the audit
-- row of the provider's answer (`outbox::settle_audited`). Sent again after its reply was lost —
-- the statement had committed — it wrote that row a second time, so it was sent only once, on a
-- connection tested first: a round trip before every disconnect's and revoke's settlement. With
-- the answer's row written only when the settlement found its intent, the statement repeats
-- harmlessly, and is sent again on another connection when its own turns out dead, as a `BEGIN`
-- is. (The intent's own audit row, `revocation.outbox`, was already written only for a deleted
-- intent.)
--
-- New names rather than new return types: a replica of the previous release keeps its
-- settlements prepared on pooled connections, and a function whose result type changed under a
-- prepared statement fails it ("cached plan must not change result type", as after 0021 to
-- 0023). The old names keep their signatures for such replicas during a rolling deploy and now
-- only call the new functions, so each body is written once; a later release may drop them.
CREATE FUNCTION harbor_outbox_done_found(p_id bigint, p_lease_until timestamptz, p_outcome text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    WITH gone AS (DELETE FROM public.revocation_outbox g
                   WHERE g.id = p_id AND g.next_attempt_at = p_lease_until RETURNING g.*)
    INSERT INTO public.audit_events (tenant_id, workspace_id, action, outcome, request_id, detail)
    SELECT gone.tenant_id, gone.workspace_id, 'revocation.outbox', p_outcome, 'outbox-worker',
           pg_catalog.jsonb_build_object('provider', gone.provider, 'reason', gone.reason,
                                         'attempts', gone.attempts)
      FROM gone;
    -- One audit row for each intent deleted: FOUND says whether there was one.
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION harbor_outbox_done_found(bigint, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_outbox_done_found(bigint, timestamptz, text) TO harbor_app;

CREATE FUNCTION harbor_outbox_retry_found(p_id bigint, p_lease_until timestamptz, p_error text,
                                          p_next timestamptz)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE public.revocation_outbox r
       SET last_error = pg_catalog.left(p_error, 200), next_attempt_at = p_next
     WHERE r.id = p_id AND r.next_attempt_at = p_lease_until;
    RETURN FOUND;
END
$$;
REVOKE ALL ON FUNCTION harbor_outbox_retry_found(bigint, timestamptz, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_outbox_retry_found(bigint, timestamptz, text, timestamptz) TO harbor_app;

-- The previous release's names: the same signatures, rights and paths, the work done by the new
-- functions.
CREATE OR REPLACE FUNCTION harbor_outbox_done(p_id bigint, p_lease_until timestamptz, p_outcome text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM public.harbor_outbox_done_found(p_id, p_lease_until, p_outcome);
END
$$;
CREATE OR REPLACE FUNCTION harbor_outbox_retry(p_id bigint, p_lease_until timestamptz, p_error text,
                                               p_next timestamptz)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM public.harbor_outbox_retry_found(p_id, p_lease_until, p_error, p_next);
END
$$;
