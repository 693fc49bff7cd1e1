-- A settlement says whether it found its intent: `harbor_outbox_done` and `harbor_outbox_retry`
-- return true when the intent was still there under the caller's lease (deleted, or put off to
-- its next attempt), false when a sending of the same settlement, or a worker, had already
-- settled it.
--
-- Why: a request settles its own delivery in one statement run alone that also writes the audit
-- row of the provider's answer (`outbox::settle_audited`). Sent again after its reply was lost —
-- the statement had committed — it wrote that row a second time, so it was sent only once, on a
-- connection tested first: a round trip before every disconnect's and revoke's settlement. With
-- the answer's audit row written only when the settlement found its intent, the statement repeats
-- harmlessly, and is sent again on another connection when its own turns out dead, as a `BEGIN`
-- is. (The intent's own audit row, `revocation.outbox`, was already written only for a deleted
-- intent.)
--
-- A return type cannot be changed in place: each function is dropped and created again in this
-- one transaction, with its body, path, owner-only rights and grant as before. A replica of the
-- previous release calls them as `SELECT f(…)` and ignores the value, so it runs on either.
DROP FUNCTION harbor_outbox_done(bigint, timestamptz, text);
CREATE FUNCTION harbor_outbox_done(p_id bigint, p_lease_until timestamptz, p_outcome text)
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
REVOKE ALL ON FUNCTION harbor_outbox_done(bigint, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_outbox_done(bigint, timestamptz, text) TO harbor_app;

DROP FUNCTION harbor_outbox_retry(bigint, timestamptz, text, timestamptz);
CREATE FUNCTION harbor_outbox_retry(p_id bigint, p_lease_until timestamptz, p_error text,
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
REVOKE ALL ON FUNCTION harbor_outbox_retry(bigint, timestamptz, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_outbox_retry(bigint, timestamptz, text, timestamptz) TO harbor_app;
