-- Row-level security on the identity tables: a request session scoped to one tenant can no longer
-- read (or count) another tenant's tenants, workspaces, users or memberships.
--
-- Two look-ups must run before a tenant is known — whose membership a bearer token's subject has
-- in the workspace of the path, and which tenant the callback's caller belongs to — so they go
-- through functions that run as the tables' owner. Each answers one question about the ids it is
-- given and never lists anything, so a caller learns no more than the look-up it makes. They run
-- with `search_path = pg_catalog, pg_temp` and name every table with its schema: nothing a request
-- session could create in `public` is ever resolved in them (and nobody may create there).

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE FUNCTION harbor_membership(p_workspace uuid, p_user uuid)
    RETURNS TABLE (tenant_id uuid, role text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.tenant_id, m.role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user
$$;

-- The same membership row, locked FOR SHARE in the caller's transaction (a lock taken inside a
-- function belongs to the transaction that called it): a removal or a role change either
-- committed before and is seen here, or waits until the caller's transaction ends. Only a row of
-- the transaction's own tenant (`harbor.tenant_id`): no session can lock another tenant's rows.
-- Returns the role, or no row.
CREATE FUNCTION harbor_membership_for_share(p_workspace uuid, p_user uuid)
    RETURNS text
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user
       AND m.tenant_id = public.harbor_current_tenant()
       FOR SHARE
$$;

CREATE FUNCTION harbor_user_tenant(p_user uuid)
    RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT u.tenant_id FROM public.users u WHERE u.id = p_user
$$;

REVOKE ALL ON FUNCTION harbor_membership(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION harbor_membership_for_share(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION harbor_user_tenant(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_membership(uuid, uuid) TO harbor_app;
GRANT EXECUTE ON FUNCTION harbor_membership_for_share(uuid, uuid) TO harbor_app;
GRANT EXECUTE ON FUNCTION harbor_user_tenant(uuid) TO harbor_app;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenants USING (id = harbor_current_tenant());
CREATE POLICY tenant_isolation ON workspaces USING (tenant_id = harbor_current_tenant());
CREATE POLICY tenant_isolation ON users USING (tenant_id = harbor_current_tenant());
CREATE POLICY tenant_isolation ON memberships USING (tenant_id = harbor_current_tenant());
