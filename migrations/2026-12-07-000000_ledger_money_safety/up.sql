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

-- 2. One at-most-once id space for transfers that posted and transfers that failed: a failure
--    is a row of ledger_transfers too (its result set; nothing but its id, partner and time),
--    so a failure recorded by one replica and a success written by another (a client's retry)
--    conflict on the one primary key: one commits, the other runs again on what committed.
--    ledger_failed_transfers stays for replicas of the older version during a rolling deploy
--    (contract: drop it in a later release); verify still checks it against what posted.
ALTER TABLE ledger_transfers ADD COLUMN result text;
ALTER TABLE ledger_transfers
    ALTER COLUMN debit_account_id DROP NOT NULL,
    ALTER COLUMN credit_account_id DROP NOT NULL,
    ALTER COLUMN amount DROP NOT NULL,
    ALTER COLUMN currency DROP NOT NULL,
    ALTER COLUMN code DROP NOT NULL,
    ALTER COLUMN flags DROP NOT NULL;
ALTER TABLE ledger_transfers ADD CONSTRAINT ledger_transfers_posted_or_failed CHECK (
    (result IS NULL AND debit_account_id IS NOT NULL AND credit_account_id IS NOT NULL
        AND amount IS NOT NULL AND currency IS NOT NULL AND code IS NOT NULL AND flags IS NOT NULL)
    OR (result IS NOT NULL AND debit_account_id IS NULL AND credit_account_id IS NULL
        AND amount IS NULL AND currency IS NULL AND pending_id IS NULL AND flags IS NULL)
) NOT VALID;
ALTER TABLE ledger_transfers VALIDATE CONSTRAINT ledger_transfers_posted_or_failed;
INSERT INTO ledger_transfers (id, partner_id, result, created_at)
    SELECT id, partner_id, result, created_at FROM ledger_failed_transfers
    ON CONFLICT (id) DO NOTHING;

-- The engine's write records failures with ON CONFLICT DO NOTHING (the same failure, decided
-- by two replicas at once, is recorded once); a failure that found its id taken must not be
-- answered as if recorded: fewer recorded than decided fails the batch as a serialization
-- failure, and it runs again on what committed.
CREATE FUNCTION ledger_assert_recorded(recorded bigint, expected bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF recorded <> expected THEN
        RAISE EXCEPTION 'transfer ids decided concurrently (% of % failures recorded)', recorded, expected
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN recorded;
END;
$$;
