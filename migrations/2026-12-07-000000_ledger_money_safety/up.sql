-- Money safety of the ledger (expand only: old and new pods may run side by side).
--
-- 1. Who may move money on an account. A partner's raw ledger API may move money only on the
--    books it made itself through POST /v1/ledger/accounts (partner_books). Every other
--    account (wallets, rails, cards, the platform's) belongs to the system: money moves on it
--    only through its module (payments, cards), with limits, records and events. Default-deny:
--    existing accounts are the system's unless they are plainly a partner's own books, so a
--    wallet account can never be mistaken for one (wallet accounts: code 100, metadata naming
--    their wallet).
ALTER TABLE ledger_accounts ADD COLUMN partner_books boolean NOT NULL DEFAULT false;
UPDATE ledger_accounts SET partner_books = true
    WHERE partner_id IS NOT NULL AND NOT (code = 100 AND metadata ? 'wallet_id');

-- 2. One at-most-once id space for transfers that posted and transfers that failed. The
--    engine's write registers every new id here in the statement that inserts it, so a
--    failure recorded by one replica and a success written by another (a client's retry)
--    conflict on this primary key: one commits, the other rolls back and runs again on what
--    committed. (Replicas of an older version, during a rolling deploy, do not register.)
CREATE TABLE ledger_transfer_ids (
    id uuid PRIMARY KEY
);
INSERT INTO ledger_transfer_ids (id)
    SELECT id FROM ledger_transfers UNION SELECT id FROM ledger_failed_transfers;
