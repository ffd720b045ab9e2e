-- Accounts may block new debits (16, a frozen wallet) or new credits (32); posting or voiding a
-- pending transfer still works. The engine reads the flags with the totals and writes only if
-- neither changed since, so a freeze takes effect exactly between two batches.
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_flags_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_flags_check
    CHECK (flags & ~63 = 0 AND flags & 3 <> 3);
