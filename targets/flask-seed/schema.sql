-- The flask-seed target's schema: the tables the seeds name (qbo_connections,
-- workspace_activations UNIQUE(workspace_id), entitlements, the Connector and Documents tables
-- of the threat model), with the tenants, workspaces, users and memberships they hang off.
CREATE TABLE tenants (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE workspaces (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants(id), name text NOT NULL);
CREATE TABLE users (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants(id), email text NOT NULL UNIQUE);
CREATE TABLE memberships (
  workspace_id uuid NOT NULL REFERENCES workspaces(id),
  user_id uuid NOT NULL REFERENCES users(id),
  role text NOT NULL,
  PRIMARY KEY (workspace_id, user_id)
);
CREATE TABLE entitlements (workspace_id uuid PRIMARY KEY REFERENCES workspaces(id), active boolean NOT NULL);
CREATE TABLE qbo_connections (
  workspace_id uuid PRIMARY KEY REFERENCES workspaces(id),
  status text NOT NULL DEFAULT 'NOT_CONNECTED'
);
CREATE TABLE workspace_activations (
  id bigserial PRIMARY KEY,
  workspace_id uuid NOT NULL UNIQUE REFERENCES workspaces(id),
  activated_at timestamptz NOT NULL
);
CREATE TABLE connectors (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id),
  workspace_id uuid NOT NULL REFERENCES workspaces(id),
  type text NOT NULL,
  access_token text,
  refresh_token text,
  expires_at timestamptz,
  realm_id text,
  UNIQUE (workspace_id, type)
);
CREATE TABLE documents (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id),
  connector_id bigint NOT NULL REFERENCES connectors(id),
  external_id text NOT NULL,
  content text NOT NULL,
  UNIQUE (connector_id, external_id)
);
