-- The ledger: accounts with four cached totals, immutable transfers, per-account entries with
-- the totals after each, remembered failures, and the expiry queue of pending transfers.
--
-- No foreign keys between these tables: the posting engine checks every reference under row
-- locks before writing, and foreign keys cost about a third of the batched throughput (and
-- deadlocked with late locking). The CHECK constraints below are the last guard.

CREATE TABLE ledger_accounts (
    id uuid PRIMARY KEY,
    -- NULL: owned by the platform itself (settlement, clearing); else the owning partner.
    partner_id uuid,
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    code integer NOT NULL DEFAULT 0,
    -- 1 debits_must_not_exceed_credits, 2 credits_must_not_exceed_debits, 4 history, 8 closed
    flags integer NOT NULL DEFAULT 0 CHECK (flags & ~15 = 0 AND flags & 3 <> 3),
    metadata jsonb,
    debits_pending bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    -- Entries written so far; the next entry of this account gets entry_seq + 1.
    entry_seq bigint NOT NULL DEFAULT 0 CHECK (entry_seq >= 0),
    created_at timestamptz NOT NULL,
    CONSTRAINT ledger_accounts_debits_within_credits
        CHECK (flags & 1 = 0 OR debits_posted + debits_pending <= credits_posted),
    CONSTRAINT ledger_accounts_credits_within_debits
        CHECK (flags & 2 = 0 OR credits_posted + credits_pending <= debits_posted)
) WITH (fillfactor = 70);
-- fillfactor leaves room in each page so the constant total updates stay HOT (no index
-- writes, no page splits): no indexed column ever changes on an update.
CREATE INDEX ledger_accounts_partner_idx ON ledger_accounts (partner_id, id);

CREATE TABLE ledger_transfers (
    id uuid PRIMARY KEY,
    partner_id uuid,
    debit_account_id uuid NOT NULL,
    credit_account_id uuid NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    currency text NOT NULL,
    code integer NOT NULL,
    -- 1 linked, 2 pending, 4 post_pending, 8 void_pending, 16 balancing_debit,
    -- 32 balancing_credit, 64 expiry
    flags integer NOT NULL,
    pending_id uuid,
    timeout_secs integer,
    expires_at timestamptz,
    metadata jsonb,
    created_at timestamptz NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
-- A pending transfer is posted or voided at most once, whatever any replica does.
CREATE UNIQUE INDEX ledger_transfers_resolution_key ON ledger_transfers (pending_id)
    WHERE pending_id IS NOT NULL;
CREATE TRIGGER ledger_transfers_append_only
    BEFORE UPDATE OR DELETE ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();

CREATE TABLE ledger_entries (
    account_id uuid NOT NULL,
    seq bigint NOT NULL,
    transfer_id uuid NOT NULL,
    is_credit boolean NOT NULL,
    pending_delta bigint NOT NULL,
    posted_delta bigint NOT NULL,
    debits_pending bigint NOT NULL,
    debits_posted bigint NOT NULL,
    credits_pending bigint NOT NULL,
    credits_posted bigint NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, seq)
);
CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();

-- The engine's write updates each account only if it is still at the version it read; this
-- turns "fewer accounts updated than expected" into a serialization failure, so the whole
-- statement (and the COMMIT pipelined behind it) fails and the batch is retried.
CREATE FUNCTION ledger_assert_unchanged(updated bigint, expected bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF updated <> expected THEN
        RAISE EXCEPTION 'ledger accounts changed concurrently (% of % updated)', updated, expected
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN updated;
END;
$$;

-- Ids of transfers that failed on the ledger's state; reusing one answers id_already_failed.
CREATE TABLE ledger_failed_transfers (
    id uuid PRIMARY KEY,
    partner_id uuid,
    result text NOT NULL,
    created_at timestamptz NOT NULL
);

-- Pending transfers with a timeout that are not resolved yet. The expiry worker leases rows
-- (claimed_until) so replicas do not void the same transfer at once; the engine deletes the
-- row in the transaction that posts, voids or expires the transfer.
CREATE TABLE ledger_pending_expiry (
    transfer_id uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    claimed_until timestamptz
);
CREATE INDEX ledger_pending_expiry_due_idx ON ledger_pending_expiry (expires_at);
