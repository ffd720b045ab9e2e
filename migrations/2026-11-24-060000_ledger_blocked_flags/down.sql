ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_flags_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_flags_check
    CHECK (flags & ~15 = 0 AND flags & 3 <> 3);
