DROP TABLE ledger_transfer_ids;
ALTER TABLE ledger_accounts DROP COLUMN partner_books;
