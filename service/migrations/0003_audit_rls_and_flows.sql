-- The audit trail is tenant data too: the service's role may only append rows of the tenant its
-- transaction is scoped to, and read only those.
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (tenant_id = harbor_current_tenant()) WITH CHECK (tenant_id = harbor_current_tenant());

-- The OAuth flow a PENDING connection waits for: authorize sets it, only a callback carrying the
-- same flow (inside its state) may complete or fail it, and leaving PENDING clears it. An older
-- or another member's state cannot complete over a newer flow.
ALTER TABLE connections ADD COLUMN pending_flow uuid;

-- Leaving PENDING always forgets the flow, whatever code wrote the row (a trigger rather than a
-- CHECK, so a replica of the previous release, which does not know the column, keeps working).
CREATE FUNCTION harbor_forget_settled_flow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'PENDING' THEN
        NEW.pending_flow := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER connections_forget_settled_flow BEFORE UPDATE ON connections
    FOR EACH ROW EXECUTE FUNCTION harbor_forget_settled_flow();

-- The grant a CONNECTED connection holds: new with every completed authorization, kept across
-- refreshes, gone with the tokens. A sync stores what it fetched only if the grant it used is
-- still the connection's (a disconnect and reconnect in between would otherwise pass).
ALTER TABLE connections ADD COLUMN grant_id uuid;
