-- When a connection's refresh token expires, where its provider says (Intuit's
-- `x_refresh_token_expires_in` in every token answer) or documents a fixed lifetime (Box: 60 days).
-- Past it the grant is over whatever the row's status: a sync ends the connection without asking
-- the provider, and activation does not rest on it. NULL: unknown (the grant lasts until a refresh
-- is refused), or no refresh token.
ALTER TABLE connections ADD COLUMN refresh_expires_at timestamptz;
