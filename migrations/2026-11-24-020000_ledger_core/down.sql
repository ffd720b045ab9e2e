DROP TABLE IF EXISTS ledger_pending_expiry;
DROP TABLE IF EXISTS ledger_failed_transfers;
DROP TABLE IF EXISTS ledger_entries;
DROP TABLE IF EXISTS ledger_transfers;
DROP TABLE IF EXISTS ledger_accounts;
DROP FUNCTION IF EXISTS ledger_assert_unchanged(bigint, bigint);
