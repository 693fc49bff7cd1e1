-- The audit trail is tenant data too: the service's role may only append rows of the tenant its
-- transaction is scoped to, and read only those.
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (tenant_id = harbor_current_tenant()) WITH CHECK (tenant_id = harbor_current_tenant());

-- The OAuth flow a PENDING connection waits for: authorize sets it, only a callback carrying the
-- same flow (inside its state) may complete or fail it, and leaving PENDING clears it. An older
-- or another member's state cannot complete over a newer flow.
ALTER TABLE connections ADD COLUMN pending_flow uuid,
    ADD CONSTRAINT connections_flow_only_when_pending CHECK (status = 'PENDING' OR pending_flow IS NULL);
