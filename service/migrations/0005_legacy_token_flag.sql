-- Format 1 token values (sealed before the grant was part of their associated data) may be
-- re-sealed by `rotate-keys` only on the rows that held them when this release was installed:
-- a format-1 value written into a row later (a restored backup, a copied dump) is exactly the
-- replay the grant binding exists to refuse, so it is never re-sealed to the row's current grant.
ALTER TABLE connections ADD COLUMN legacy_tokens boolean NOT NULL DEFAULT false;
UPDATE connections SET legacy_tokens = true WHERE access_token IS NOT NULL AND get_byte(access_token, 0) = 1;
