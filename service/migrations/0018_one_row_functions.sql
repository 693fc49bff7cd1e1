-- The functions that return at most one row say so (`ROWS 1`), so that PostgreSQL keeps a generic
-- plan for the statements that call them instead of planning them again at every call.
--
-- A set-returning function is estimated at 1000 rows unless it says otherwise. A statement that
-- evaluates an expression per row of `harbor_enter_workspace` — the workspace lock's clause,
-- `CASE WHEN e.role = ANY($6) THEN pg_advisory_xact_lock($4, $5)::text END` — was therefore costed
-- a thousand times over. A custom plan knows the array's length (two roles); the generic plan
-- takes an array parameter for ten elements. Over 1000 rows that difference outweighs what
-- PostgreSQL charges a custom plan for its planning, so it never chose the generic plan:
-- `pg_stat_statements` (`track_planning = on`) under 100 goose users counted 15,308 plans for
-- 15,268 calls of that statement, and `pg_prepared_statements` 0 generic plans of 8 in one session
-- (3 of 8 after this migration, the first 5 being custom by rule). The functions' rows are the
-- truth: a membership is one row or none. A later `CREATE OR REPLACE` of one of them resets its
-- estimate unless it says `ROWS 1` again; the integration test
-- `the_entry_statements_keep_a_generic_plan` checks both.
ALTER FUNCTION harbor_enter_workspace(uuid, uuid, text) ROWS 1;
ALTER FUNCTION harbor_enter_workspace(uuid, uuid) ROWS 1;
ALTER FUNCTION harbor_membership(uuid, uuid) ROWS 1;
