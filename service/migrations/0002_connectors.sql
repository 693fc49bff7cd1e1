-- Connectors: encrypted tokens on the connection row, fetched documents, and row-level security
-- with a non-owner role for the service (threat model: "DB breach → token leak", tenant filtering).

-- Token material is only ever stored as AES-256-GCM ciphertext (see service/src/vault.rs): the
-- ciphertext names its key id and is bound to (tenant, connection, provider, field) by its
-- associated data. `token_key_id` repeats the key id so `rotate-keys` can find rows to re-encrypt.
ALTER TABLE connections
    ADD COLUMN access_token        bytea,
    ADD COLUMN refresh_token       bytea,
    ADD COLUMN token_key_id        text,
    ADD COLUMN token_expires_at    timestamptz,
    ADD COLUMN scopes              text[] NOT NULL DEFAULT '{}',
    ADD COLUMN last_refresh_at     timestamptz,
    ADD COLUMN last_refresh_outcome text,
    -- Only a CONNECTED connection holds tokens: every other status has them wiped, so a failed or
    -- interrupted flow cannot leave a partial row behind.
    ADD CONSTRAINT connections_tokens_only_when_connected
        CHECK (status = 'CONNECTED' OR (access_token IS NULL AND refresh_token IS NULL AND token_key_id IS NULL));

CREATE TABLE documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    provider      text NOT NULL CHECK (provider IN ('qbo', 'gmail', 'slack', 'box')),
    external_id   text NOT NULL,
    title         text NOT NULL,
    fetched_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, provider, external_id),
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces(tenant_id, id)
);

-- The service's role. It owns nothing, so row-level security applies to it: even a query that
-- forgets its tenant filter sees only the tenant set for its transaction (`harbor.tenant_id`).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'harbor_app') THEN
        CREATE ROLE harbor_app NOLOGIN;
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO harbor_app;
GRANT SELECT ON tenants, workspaces, users, memberships TO harbor_app;
GRANT SELECT ON entitlements TO harbor_app;
GRANT SELECT, UPDATE ON connections TO harbor_app;
GRANT SELECT, INSERT ON workspace_activations TO harbor_app;
GRANT SELECT, INSERT, UPDATE ON documents TO harbor_app;
-- Append-only for the service by privilege as well as by trigger: no UPDATE, no DELETE.
GRANT SELECT, INSERT ON audit_events TO harbor_app;
GRANT USAGE ON SEQUENCE audit_events_id_seq TO harbor_app;

-- The tenant of the current transaction, or NULL (then every policy below matches nothing).
CREATE FUNCTION harbor_current_tenant() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('harbor.tenant_id', true), '')::uuid
$$;

ALTER TABLE connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE entitlements ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspace_activations ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON connections
    USING (tenant_id = harbor_current_tenant()) WITH CHECK (tenant_id = harbor_current_tenant());
CREATE POLICY tenant_isolation ON entitlements
    USING (tenant_id = harbor_current_tenant()) WITH CHECK (tenant_id = harbor_current_tenant());
CREATE POLICY tenant_isolation ON workspace_activations
    USING (tenant_id = harbor_current_tenant()) WITH CHECK (tenant_id = harbor_current_tenant());
CREATE POLICY tenant_isolation ON documents
    USING (tenant_id = harbor_current_tenant()) WITH CHECK (tenant_id = harbor_current_tenant());
