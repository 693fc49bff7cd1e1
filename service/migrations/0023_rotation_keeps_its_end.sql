-- A rotated refresh token is written ahead before it is stored, and when its store never commits
-- the outbox adopts it into its row (migration 0010). The provider's answer that carried the
-- token also said how long the grant lasts (Intuit's `x_refresh_token_expires_in`; Box's 60 days
-- are its dialect's), and that answer is gone by then: without the end kept beside the token, an
-- adopted grant's end was unknown, and an activation could rest on a QuickBooks grant Intuit had
-- ended. The write-ahead keeps it here; the adoption stores it with the token. An intent written
-- by a release before this one has none, and its adoption leaves the end unknown, as before.
ALTER TABLE revocation_outbox ADD COLUMN refresh_expires_at timestamptz;
