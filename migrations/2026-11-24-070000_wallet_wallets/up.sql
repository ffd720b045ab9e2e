-- Wallets: a customer's ledger account (debits_must_not_exceed_credits) with a lifecycle.
-- Freezing sets the account's debits_blocked/credits_blocked flags in the same transaction, so
-- the posting engine refuses movements exactly from the freeze on.
CREATE TABLE wallet_wallets (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    account_id uuid NOT NULL UNIQUE,
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind text NOT NULL CHECK (kind IN ('personal', 'business')),
    status text NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    -- While frozen: what is blocked ('all', 'debits', 'credits').
    freeze_mode text CHECK (freeze_mode IN ('all', 'debits', 'credits')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK ((status = 'frozen') = (freeze_mode IS NOT NULL))
);
CREATE INDEX wallet_wallets_partner_idx ON wallet_wallets (partner_id, id DESC);
CREATE INDEX wallet_wallets_customer_idx ON wallet_wallets (customer_id, id DESC);

-- Every status change, with who and why: append-only.
CREATE TABLE wallet_status_changes (
    id bigserial PRIMARY KEY,
    wallet_id uuid NOT NULL REFERENCES wallet_wallets (id),
    from_status text,
    to_status text NOT NULL,
    freeze_mode text,
    reason text NOT NULL,
    actor text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX wallet_status_changes_wallet_idx ON wallet_status_changes (wallet_id, id);
CREATE TRIGGER wallet_status_changes_append_only
    BEFORE UPDATE OR DELETE ON wallet_status_changes
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();
