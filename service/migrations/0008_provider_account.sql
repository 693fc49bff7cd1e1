-- The provider account a grant is for, when the provider's callback names one: QuickBooks
-- Online sends `realmId`, the company the user authorized, and every accounting API path needs
-- it. Stored with the grant's tokens, and wiped with them.
ALTER TABLE connections ADD COLUMN provider_account text
    CHECK (provider_account IS NULL OR provider_account ~ '^[0-9]{1,32}$');
