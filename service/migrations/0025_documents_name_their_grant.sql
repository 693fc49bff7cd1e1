-- A document names the grant it was fetched under. Migration 0024 ends a grant's documents with
-- it, but a document carried no grant of its own: what the check of "every document belongs to
-- its connection's grant" could read was only the connection's status, so documents stored as a
-- newer grant's — an older grant's read finishing after a reconnect — looked like the new grant's.
-- The sync's store writes the grant it read with (the row must still hold it, or nothing is
-- stored), and an upsert of a document another read of the same grant stored takes it again.
--
-- Rows from before this migration name no grant, and which grant fetched them cannot be
-- recovered. Since 0024 a connection's documents are all its current grant's, so each row under a
-- CONNECTED connection is given that grant. (The exception 0024 names stays one: documents an
-- older grant fetched before a reconnect that came before 0024. They end with the current grant.)
ALTER TABLE documents ADD COLUMN grant_id uuid;

UPDATE documents d
   SET grant_id = c.grant_id
  FROM connections c
 WHERE c.workspace_id = d.workspace_id AND c.provider = d.provider
   AND c.status = 'CONNECTED';
