-- A rotated refresh token whose store never committed (the sync's replica died, or its database
-- link was cut, between the provider's rotation and the store) is the grant's only live key, and
-- the row it belongs to still holds the spent one. Revoking it ends a grant the user still wants;
-- the worker stores it into that row instead ("adopts" it) — only while the row still holds
-- exactly the token it replaced (same grant, CONNECTED, the spent ciphertext unchanged), so a
-- row that moved on (disconnected, reconnected, rotated again, re-sealed by `rotate-keys`) gets
-- the revocation as before.
ALTER TABLE revocation_outbox ADD COLUMN replaces_token bytea;

-- Adopts intent p_id (held under the lease p_lease_until): takes the workspace's lock (the one
-- namespace every writer of the connection takes, locks.rs derives the same key) before any row
-- lock, stores the rotated token into the row that still holds the token it replaced — sealed
-- under the same key as the row's (`p_token_key`), so the row's `token_key_id` stays true for
-- `rotate-keys` — marks the access token due for refresh at p_now, deletes the intent and audits
-- it. Answers 'adopted'; 'not_adoptable' (the row moved on, or its tokens are under another key:
-- the worker revokes the token instead); or 'lease_lost' (another worker took the intent while
-- this one waited for the lock: this one does nothing more with it). The lock wait is bounded
-- well below the lease, so one long-held workspace lock cannot stall a worker past it.
CREATE FUNCTION harbor_outbox_adopt(p_id bigint, p_lease_until timestamptz, p_now timestamptz,
                                    p_token_key text)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i public.revocation_outbox;
    adopted integer;
BEGIN
    SELECT * INTO i FROM public.revocation_outbox
     WHERE id = p_id AND next_attempt_at = p_lease_until;
    IF NOT FOUND THEN
        RETURN 'lease_lost';
    END IF;
    IF i.reason <> 'unstored_grant' OR i.field <> 'refresh' OR i.replaces_token IS NULL THEN
        RETURN 'not_adoptable';
    END IF;
    PERFORM pg_catalog.set_config('lock_timeout', '10s', true);
    PERFORM pg_advisory_xact_lock(
        1212306007,  -- 0x48425257, "HBRW": locks::WORKSPACE_LOCK_NAMESPACE
        ('x' || left(encode(sha256(uuid_send(i.workspace_id)), 'hex'), 8))::bit(32)::integer);
    PERFORM 1 FROM public.revocation_outbox
     WHERE id = p_id AND next_attempt_at = p_lease_until FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'lease_lost';
    END IF;
    UPDATE public.connections c
       SET refresh_token = i.sealed_token,
           token_expires_at = p_now,
           version = c.version + 1,
           updated_at = now()
     WHERE c.id = i.connection_id AND c.tenant_id = i.tenant_id AND c.grant_id = i.grant_id
       AND c.status = 'CONNECTED' AND c.refresh_token = i.replaces_token
       AND c.token_key_id = p_token_key;
    GET DIAGNOSTICS adopted = ROW_COUNT;
    IF adopted = 0 THEN
        RETURN 'not_adoptable';
    END IF;
    DELETE FROM public.revocation_outbox WHERE id = p_id;
    INSERT INTO public.audit_events (tenant_id, workspace_id, action, outcome, request_id, detail)
    VALUES (i.tenant_id, i.workspace_id, 'revocation.outbox', 'adopted', 'outbox-worker',
            pg_catalog.jsonb_build_object('provider', i.provider, 'reason', i.reason, 'attempts', i.attempts));
    RETURN 'adopted';
END
$$;

REVOKE ALL ON FUNCTION harbor_outbox_adopt(bigint, timestamptz, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_outbox_adopt(bigint, timestamptz, timestamptz, text) TO harbor_app;
