-- The revocation outbox: a grant the service gives up (revoke, disconnect) is written here in the
-- same transaction as the status change, and stays until the provider confirmed its revocation.
-- A replica that dies between the commit and the provider call leaves the intent behind, and any
-- replica's worker delivers it: at least once, which RFC 7009 makes harmless.
--
-- The token is the ciphertext the connection row held, copied as it was: it stays bound to
-- (tenant, connection, provider, field, grant), so it decrypts only as the intent of that grant
-- and nothing here is plaintext.
CREATE TABLE revocation_outbox (
    id               bigserial PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id),
    workspace_id     uuid NOT NULL,
    connection_id    uuid NOT NULL,
    provider         text NOT NULL CHECK (provider IN ('qbo', 'gmail', 'slack', 'box')),
    grant_id         uuid,
    field            text NOT NULL CHECK (field IN ('access', 'refresh')),
    sealed_token     bytea NOT NULL,
    reason           text NOT NULL CHECK (reason IN ('revoke', 'disconnect')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    -- Service-clock time before which no worker takes it (a lease: the request that wrote it
    -- delivers it first; a worker that claimed it is calling the provider).
    next_attempt_at  timestamptz NOT NULL,
    last_error       text
);
CREATE INDEX revocation_outbox_due ON revocation_outbox (next_attempt_at, id);

ALTER TABLE revocation_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON revocation_outbox
    USING (tenant_id = harbor_current_tenant()) WITH CHECK (tenant_id = harbor_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON revocation_outbox TO harbor_app;
GRANT USAGE ON SEQUENCE revocation_outbox_id_seq TO harbor_app;

-- The worker belongs to no tenant: it claims due intents through these functions, which run as
-- the owner and touch nothing but the outbox (and the audit trail, append-only). Like 0006's, they
-- resolve nothing through `public`: `search_path = pg_catalog, pg_temp`, every table qualified.
-- A claim is a lease until `next_attempt_at`; settling names the lease it holds, so a worker whose
-- lease ran out (and whose intent another worker took) changes nothing.

-- Takes up to p_limit due intents, leasing each until p_now + p_lease (rows another worker holds
-- are skipped, not waited for) and counting the attempt.
CREATE FUNCTION harbor_outbox_claim(p_now timestamptz, p_lease interval, p_limit integer)
    RETURNS SETOF revocation_outbox
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE public.revocation_outbox o
       SET next_attempt_at = p_now + p_lease, attempts = o.attempts + 1
     WHERE o.id IN (SELECT d.id FROM public.revocation_outbox d
                     WHERE d.next_attempt_at <= p_now
                     ORDER BY d.id LIMIT p_limit
                       FOR UPDATE SKIP LOCKED)
    RETURNING o.*
$$;

-- The provider confirmed: the intent is gone, and the audit trail says so.
CREATE FUNCTION harbor_outbox_done(p_id bigint, p_lease_until timestamptz, p_outcome text)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM public.revocation_outbox
                   WHERE id = p_id AND next_attempt_at = p_lease_until RETURNING *)
    INSERT INTO public.audit_events (tenant_id, workspace_id, action, outcome, request_id, detail)
    SELECT tenant_id, workspace_id, 'revocation.outbox', p_outcome, 'outbox-worker',
           pg_catalog.jsonb_build_object('provider', provider, 'reason', reason, 'attempts', attempts)
      FROM gone
$$;

-- It failed: try again at p_next, remembering why.
CREATE FUNCTION harbor_outbox_retry(p_id bigint, p_lease_until timestamptz, p_error text, p_next timestamptz)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE public.revocation_outbox
       SET last_error = pg_catalog.left(p_error, 200), next_attempt_at = p_next
     WHERE id = p_id AND next_attempt_at = p_lease_until
$$;

REVOKE ALL ON FUNCTION harbor_outbox_claim(timestamptz, interval, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION harbor_outbox_done(bigint, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION harbor_outbox_retry(bigint, timestamptz, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_outbox_claim(timestamptz, interval, integer) TO harbor_app;
GRANT EXECUTE ON FUNCTION harbor_outbox_done(bigint, timestamptz, text) TO harbor_app;
GRANT EXECUTE ON FUNCTION harbor_outbox_retry(bigint, timestamptz, text, timestamptz) TO harbor_app;
