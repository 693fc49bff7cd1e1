-- What a sync fetched lives as long as the grant it was fetched under. When a connection's grant
-- ends — a disconnect, a revoke, a refresh the provider refused, a reconnect that replaced it —
-- the documents of that workspace and provider go in the same transaction. Before this, they
-- stayed readable to every member of the workspace (members added later too) after the user had
-- taken Harbor's access back, and a reconnect to another account (another QuickBooks company,
-- whose ids are numbered per company) overwrote the first account's documents by id and listed
-- the two as one.
--
-- A trigger, not a statement in the service: every path that changes `grant_id` (the lifecycle's
-- one UPDATE, the callback's store, the outbox) is covered, a replica of the previous release
-- included. It runs as the owner because the service's role may not delete documents (no DELETE
-- privilege: it still cannot remove one by hand), and it names the tenant, workspace and provider
-- of the row that changed, so row-level security is not what scopes it.
CREATE FUNCTION harbor_documents_end_with_grant() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM public.documents d
     WHERE d.tenant_id = OLD.tenant_id
       AND d.workspace_id = OLD.workspace_id
       AND d.provider = OLD.provider;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION harbor_documents_end_with_grant() FROM PUBLIC;

-- A grant ends when the row leaves CONNECTED (a row sealed before grants had ids, 0003, holds
-- none) or its grant changes.
CREATE TRIGGER connections_documents_end_with_grant AFTER UPDATE OF status, grant_id ON connections
    FOR EACH ROW
    WHEN ((OLD.status = 'CONNECTED' AND NEW.status <> 'CONNECTED')
          OR (OLD.grant_id IS NOT NULL AND OLD.grant_id IS DISTINCT FROM NEW.grant_id))
    EXECUTE FUNCTION harbor_documents_end_with_grant();
