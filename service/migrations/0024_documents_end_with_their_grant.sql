-- What a sync fetched lives as long as the grant it was fetched under. When a connection's grant
-- ends — a disconnect, a revoke, a refresh the provider refused, a reconnect that replaced it —
-- the documents of that workspace and provider go in the same transaction. Before this, they
-- stayed readable to every member of the workspace (members added later too) after the user had
-- taken Harbor's access back, and a reconnect to another account (another QuickBooks company,
-- whose ids are numbered per company) overwrote the first account's documents by id and listed
-- the two as one.
--
-- A grant ends in the service when its connection's row leaves CONNECTED or takes another grant
-- (the lifecycle's one UPDATE, `lifecycle::store`: a disconnect, a revoke, a refused refresh). A
-- grant the user ends at the provider ends here at the next request that learns it (a sync's
-- refused refresh). A trigger, not a statement in the service: whatever code writes the row, a
-- replica of the previous release included, takes the documents with the grant. It runs as the
-- owner because the service's role may not delete documents (no DELETE privilege: it still
-- cannot remove one by hand), and it names the tenant, workspace and provider of the row that
-- changed, so row-level security is not what scopes it.
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

-- What grants ended before this migration left behind: every document of a workspace and provider
-- whose connection is not CONNECTED. (Documents an older grant of a connection that has since
-- connected again fetched cannot be told from the new grant's: they stay until its end.)
DELETE FROM documents d
 WHERE NOT EXISTS (SELECT 1 FROM connections c
                    WHERE c.workspace_id = d.workspace_id AND c.provider = d.provider
                      AND c.status = 'CONNECTED');
