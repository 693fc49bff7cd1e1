-- A user's row keeps its tenant. Replicas remember a user's tenant once read (`UserTenants`, in
-- service/src/user_tenants.rs) and scope the OAuth callback's transactions by it, so a changed
-- tenant would leave them scoping a user's requests to the tenant the user left. The memberships'
-- foreign key to users(tenant_id, id) already refused the change for a user with a membership;
-- this refuses an UPDATE of it for every user. It does not stop a row deleted and its id inserted
-- again in another tenant (nor a disabled trigger): the callback reads the tenant again before it
-- refuses a state on a remembered one, and forgets it after a 404.
CREATE FUNCTION harbor_user_tenant_is_fixed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        RAISE EXCEPTION 'a user''s tenant never changes (user %)', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_tenant_is_fixed
    BEFORE UPDATE OF tenant_id ON users
    FOR EACH ROW EXECUTE FUNCTION harbor_user_tenant_is_fixed();
