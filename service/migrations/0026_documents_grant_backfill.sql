-- The grant of the documents stored before 0025, where it can be told: since 0024 a connection's
-- documents are all its current grant's, so each row under a CONNECTED connection that has a
-- grant id is given it. (The exception 0024 names stays one: documents an older grant fetched
-- before a reconnect that came before 0024. They end with the current grant.) Row locks only:
-- syncs, lists and disconnects go on while it runs, each waiting at most for the rows it shares
-- with it.
UPDATE documents d
   SET grant_id = c.grant_id
  FROM connections c
 WHERE c.workspace_id = d.workspace_id AND c.provider = d.provider
   AND c.status = 'CONNECTED' AND c.grant_id IS NOT NULL
   AND d.grant_id IS NULL;
