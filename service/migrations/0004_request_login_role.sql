-- Requests log in as harbor_app itself instead of logging in as the schema owner and running
-- `SET ROLE harbor_app`: a session that never was the owner cannot `RESET ROLE` its way past
-- row-level security. The role owns nothing and is a member of nothing; the service refuses to
-- start if its login role could become a superuser, a BYPASSRLS role or the tables' owner.
-- A deployment gives it a password (ALTER ROLE harbor_app PASSWORD …) or its own pg_hba rule;
-- migrations and key rotation use the owner's separate credential.
ALTER ROLE harbor_app LOGIN;
