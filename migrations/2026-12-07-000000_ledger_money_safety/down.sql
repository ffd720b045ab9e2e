DROP TRIGGER ledger_failed_transfers_register_ids ON ledger_failed_transfers;
DROP TRIGGER ledger_transfers_register_ids ON ledger_transfers;
DROP FUNCTION ledger_register_transfer_ids();
DROP TABLE ledger_transfer_ids;
ALTER TABLE ledger_accounts DROP COLUMN partner_books;
