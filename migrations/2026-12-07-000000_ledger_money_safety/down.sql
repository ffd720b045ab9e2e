DROP FUNCTION ledger_assert_recorded(bigint, bigint);
ALTER TABLE ledger_transfers DISABLE TRIGGER ledger_transfers_append_only;
DELETE FROM ledger_transfers WHERE result IS NOT NULL;
ALTER TABLE ledger_transfers ENABLE TRIGGER ledger_transfers_append_only;
ALTER TABLE ledger_transfers DROP CONSTRAINT ledger_transfers_posted_or_failed;
ALTER TABLE ledger_transfers
    ALTER COLUMN debit_account_id SET NOT NULL,
    ALTER COLUMN credit_account_id SET NOT NULL,
    ALTER COLUMN amount SET NOT NULL,
    ALTER COLUMN currency SET NOT NULL,
    ALTER COLUMN code SET NOT NULL,
    ALTER COLUMN flags SET NOT NULL;
ALTER TABLE ledger_transfers DROP COLUMN result;
ALTER TABLE ledger_accounts DROP COLUMN partner_books;
