-- A sync about to refresh looks, under the workspace lock and the row lock, for a rotation of the
-- refresh token its row holds that an interrupted refresh wrote ahead (`outbox::unstored_rotation`).
-- That look-up runs inside the critical section of every refresh, and the outbox is not small when
-- a provider refuses revocations for a while (its intents are never dropped): it must not scan the
-- table. Only rotated refresh tokens written ahead are indexed, by the row they belong to.
CREATE INDEX revocation_outbox_unstored_rotation
    ON revocation_outbox (connection_id)
    WHERE reason = 'unstored_grant' AND field = 'refresh' AND replaces_token IS NOT NULL;
