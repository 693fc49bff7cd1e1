-- Harbor reference service: tenants, workspaces, identities, entitlements, connections,
-- activations and the audit trail. Every row that belongs to a tenant carries tenant_id with a
-- foreign key, so tenant isolation can be enforced by the database as well as by queries.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id),
    email       text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE TABLE memberships (
    tenant_id     uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    user_id       uuid NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id),
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces(tenant_id, id),
    -- A user can only be a member of workspaces of their own tenant.
    FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id)
);

CREATE TABLE entitlements (
    tenant_id     uuid NOT NULL,
    workspace_id  uuid PRIMARY KEY,
    plan          text NOT NULL,
    active        boolean NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces(tenant_id, id)
);

-- One row per workspace and provider, created with the workspace (trigger below), so that
-- `SELECT ... FOR UPDATE` always has a row to lock: the row lock is the second line of defence.
CREATE TABLE connections (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    provider      text NOT NULL CHECK (provider IN ('qbo', 'gmail', 'slack', 'box')),
    status        text NOT NULL DEFAULT 'NOT_CONNECTED'
                  CHECK (status IN ('NOT_CONNECTED', 'PENDING', 'CONNECTED', 'DISCONNECTED', 'REVOKED')),
    -- The settled status a PENDING connection returns to when its authorization fails.
    settled_status text NOT NULL DEFAULT 'NOT_CONNECTED'
                  CHECK (settled_status IN ('NOT_CONNECTED', 'CONNECTED', 'DISCONNECTED', 'REVOKED')),
    version       bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, provider),
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces(tenant_id, id)
);

CREATE FUNCTION harbor_create_connections() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO connections (tenant_id, workspace_id, provider)
    SELECT NEW.tenant_id, NEW.id, p FROM unnest(ARRAY['qbo', 'gmail', 'slack', 'box']) AS p;
    RETURN NEW;
END $$;

CREATE TRIGGER workspaces_create_connections AFTER INSERT ON workspaces
    FOR EACH ROW EXECUTE FUNCTION harbor_create_connections();

-- UNIQUE(workspace_id) is the source of truth for idempotent activation.
CREATE TABLE workspace_activations (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    workspace_id  uuid NOT NULL UNIQUE,
    activated_by  uuid NOT NULL,
    activated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces(tenant_id, id),
    FOREIGN KEY (tenant_id, activated_by) REFERENCES users(tenant_id, id)
);

-- Append-only: who did what to which workspace, with what outcome. Never secrets.
CREATE TABLE audit_events (
    id            bigserial PRIMARY KEY,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    tenant_id     uuid REFERENCES tenants(id),
    workspace_id  uuid,
    actor_user_id uuid,
    action        text NOT NULL,
    outcome       text NOT NULL,
    request_id    text NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE FUNCTION harbor_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION harbor_audit_append_only();
