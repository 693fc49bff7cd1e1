-- One consent per provider account (Google): all of one Google account's grants to a client are
-- one consent, and revoking any token of any of them ends them all. Two connections that hold
-- grants of the same account (two workspaces a user connected with one mailbox, perhaps in two
-- tenants) share it: the one given up first must not be revoked at the provider yet, or the other
-- ends with it. Its intent is written all the same, parked (`parked_account` names the account,
-- and no worker takes it), and is let go when the account's last holder ends — by its own
-- revocation, or by any other end (a refused refresh, tokens that no longer decrypt) — so every
-- grant given up is revoked in the end.
--
-- Only a holder whose own revocation can still end the consent counts: CONNECTED, with a refresh
-- token not past its known end at `p_now` (the service's clock). A grant whose token is dead ends
-- nothing when revoked (Google answers `invalid_token`).
--
-- Whether another connection still holds the account's consent, and the parked intents of the
-- account, cross tenants, so both are reached through this one function, which runs as the owner
-- and answers one boolean: nothing of another row leaves it but that bit (a connection somewhere
-- holds the same account), which only someone who controls a grant of that account can learn.
-- It first takes the account's advisory lock (`classid` "HBRC", its own namespace: the workspace
-- locks' "HBRW" is untouched), held to the end of the caller's transaction. Two holders of one
-- account that end at once are then decided one after the other, and the second sees the first's
-- commit: the last one lets every parked intent go, never neither. A request takes it last, after
-- its workspace and row locks (or as its only lock: a callback parking its unused grant), and the
-- worker's sweep takes only the locks of accounts it releases, in account order, and then only
-- the parked rows of those accounts, so no cycle can close.
--
-- A holder also stops counting with nobody looking: its refresh token passes its end. The
-- outbox's worker sweeps for that every pass (`harbor_consent_sweep`): the parked intents of an
-- account no live holder keeps are let go.
ALTER TABLE revocation_outbox ADD COLUMN parked_account text;
CREATE INDEX revocation_outbox_parked ON revocation_outbox (provider, parked_account)
    WHERE parked_account IS NOT NULL;
CREATE INDEX connections_consent ON connections (provider, provider_account)
    WHERE status = 'CONNECTED' AND provider_account IS NOT NULL;

-- Whether a connection other than `p_except` holds a live grant of the account: CONNECTED, with
-- a refresh token not past its known end at `p_now`. Owner-only: the two functions below ask it.
CREATE FUNCTION harbor_consent_held(p_provider text, p_account text, p_except uuid,
                                    p_now timestamptz)
    RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM public.connections c
                    WHERE c.provider = p_provider AND c.provider_account = p_account
                      AND c.status = 'CONNECTED' AND c.id <> p_except
                      AND c.refresh_token IS NOT NULL
                      AND (c.refresh_expires_at IS NULL OR c.refresh_expires_at > p_now))
$$;
REVOKE ALL ON FUNCTION harbor_consent_held(text, text, uuid, timestamptz) FROM PUBLIC;

-- `true`: another holder keeps the consent alive (the caller parks its intent). `false`: none
-- does, and the account's parked intents are due at `p_now`.
CREATE FUNCTION harbor_consent_give_up(p_provider text, p_account text, p_connection uuid,
                                       p_now timestamptz)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(1212305987, pg_catalog.hashtext(p_provider || ':' || p_account));
    IF public.harbor_consent_held(p_provider, p_account, p_connection, p_now) THEN
        RETURN true;
    END IF;
    UPDATE public.revocation_outbox o SET parked_account = NULL, next_attempt_at = p_now
     WHERE o.provider = p_provider AND o.parked_account = p_account;
    RETURN false;
END
$$;
REVOKE ALL ON FUNCTION harbor_consent_give_up(text, text, uuid, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_consent_give_up(text, text, uuid, timestamptz) TO harbor_app;

-- Lets go the parked intents of every account no live holder keeps; answers for how many
-- accounts. Only the candidates — parked accounts with no live holder at first sight, which is
-- almost always none — are locked and asked again (`harbor_consent_give_up`), so the sweep holds
-- no lock of an account a holder still keeps, however many wait behind one.
CREATE FUNCTION harbor_consent_sweep(p_now timestamptz)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parked record;
    released bigint := 0;
BEGIN
    FOR parked IN SELECT DISTINCT o.provider, o.parked_account FROM public.revocation_outbox o
                   WHERE o.parked_account IS NOT NULL
                     AND NOT public.harbor_consent_held(o.provider, o.parked_account,
                                                        '00000000-0000-0000-0000-000000000000',
                                                        p_now)
                   ORDER BY 1, 2 LOOP
        -- The nil connection leaves no holder out.
        IF NOT public.harbor_consent_give_up(parked.provider, parked.parked_account,
                                             '00000000-0000-0000-0000-000000000000', p_now) THEN
            released := released + 1;
        END IF;
    END LOOP;
    RETURN released;
END
$$;
REVOKE ALL ON FUNCTION harbor_consent_sweep(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_consent_sweep(timestamptz) TO harbor_app;
