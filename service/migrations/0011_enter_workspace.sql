-- A member's request enters its workspace in one statement: the membership row of the path's
-- workspace and the token's subject, locked FOR SHARE in the caller's transaction, and the
-- transaction scoped to that membership's tenant (`harbor.tenant_id`, local to the transaction).
-- Until now the membership was read twice per request: once from the pool, in a transaction of
-- its own, to learn the tenant to scope the request's transaction to, and again inside it. One
-- read inside the request's transaction is both the check and the scope, and it is the one that
-- holds until the commit.
--
-- A SECURITY DEFINER function, like `harbor_membership`: no tenant is known before it runs, and
-- row-level security hides every membership from a session without one. It answers one question
-- about the ids it is given and lists nothing. Its `SET search_path` clause restores only
-- `search_path` when it returns; the tenant it sets with `set_config(..., true)` stays for the
-- rest of the transaction, which is the point.
-- Returns the tenant and the role, or no row (not a member, or no such workspace: the two are
-- deliberately indistinguishable), in which case nothing is set. Like
-- `harbor_membership_for_share`, it never locks (or moves a transaction to) another tenant's
-- row: in a transaction already scoped to a tenant it finds only that tenant's memberships.
CREATE FUNCTION harbor_enter_workspace(p_workspace uuid, p_user uuid)
    RETURNS TABLE (tenant_id uuid, role text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT m.tenant_id, m.role INTO tenant_id, role FROM public.memberships m
     WHERE m.workspace_id = p_workspace AND m.user_id = p_user
       AND (public.harbor_current_tenant() IS NULL OR m.tenant_id = public.harbor_current_tenant())
       FOR SHARE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM set_config('harbor.tenant_id', tenant_id::text, true);
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION harbor_enter_workspace(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION harbor_enter_workspace(uuid, uuid) TO harbor_app;
