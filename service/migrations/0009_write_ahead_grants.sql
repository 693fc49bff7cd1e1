-- Write-ahead of fresh grants: what a callback receives from the provider is written here, in a
-- transaction of its own, before the code exchange's result is stored. The store deletes the
-- intent in its own transaction; if the replica dies first, or the store fails, the intent stays
-- and the outbox revokes the grant — so no grant the provider issued is ever held nowhere.
ALTER TABLE revocation_outbox DROP CONSTRAINT revocation_outbox_reason_check;
ALTER TABLE revocation_outbox ADD CONSTRAINT revocation_outbox_reason_check
    CHECK (reason IN ('revoke', 'disconnect', 'unstored_grant'));
