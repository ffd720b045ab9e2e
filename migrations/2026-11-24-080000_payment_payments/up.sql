-- Payments: P2P transfers between wallets and deposits into them. Each payment is one ledger
-- transfer (its id is the payment's uuid) written in the same transaction as this row.
CREATE TABLE payment_payments (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('p2p', 'deposit', 'withdrawal', 'refund')),
    status text NOT NULL CHECK (status IN ('pending', 'completed', 'failed', 'reversed')),
    from_wallet_id uuid,
    to_wallet_id uuid,
    amount bigint NOT NULL CHECK (amount > 0),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description text,
    transfer_id uuid NOT NULL UNIQUE,
    -- Where a deposit came from / a withdrawal goes (rail details, as given).
    rail jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK (from_wallet_id IS NOT NULL OR to_wallet_id IS NOT NULL)
);
CREATE INDEX payment_payments_partner_idx ON payment_payments (partner_id, id DESC);
CREATE INDEX payment_payments_from_idx ON payment_payments (from_wallet_id, id DESC)
    WHERE from_wallet_id IS NOT NULL;
CREATE INDEX payment_payments_to_idx ON payment_payments (to_wallet_id, id DESC)
    WHERE to_wallet_id IS NOT NULL;

-- The platform's clearing account per currency on the outside rail (deposits come from it).
CREATE TABLE payment_rail_accounts (
    currency text PRIMARY KEY CHECK (currency ~ '^[A-Z]{3}$'),
    account_id uuid NOT NULL UNIQUE
);
