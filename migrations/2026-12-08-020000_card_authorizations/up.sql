-- Card authorizations as ledger holds (API.md "Cards"). An approval is a pending ledger
-- transfer from the wallet's account to the card network settlement account of its currency;
-- `hold_transfer_id` names the pending transfer that holds the money now (an increment or a
-- partial reversal replaces it with a new one, in one linked chain).

-- The platform's card network settlement accounts per currency, made on first use: several
-- shards (a card always uses the one its id picks), so holds of different cards credit
-- different accounts and the posting engine can run their batches side by side.
CREATE TABLE card_settlement_accounts (
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    shard smallint NOT NULL CHECK (shard >= 0),
    account_id uuid NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (currency, shard)
);

CREATE TABLE card_authorizations (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    -- No card when no card of the partner has the presented number (decline 14).
    card_id uuid REFERENCES card_cards (id),
    wallet_id uuid,
    -- The network's id of the message; a repeated one answers as the first did.
    network_transaction_id text CHECK (char_length(network_transaction_id) BETWEEN 1 AND 64),
    status text NOT NULL
        CHECK (status IN ('pending', 'captured', 'reversed', 'expired', 'declined')),
    decline_code text,
    response_code text NOT NULL CHECK (response_code ~ '^[0-9]{2}$'),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Asked for (with approved increments), held now, and captured, in minor units.
    amount bigint NOT NULL CHECK (amount >= 0),
    held bigint NOT NULL CHECK (held >= 0),
    captured bigint NOT NULL CHECK (captured >= 0),
    hold_transfer_id uuid UNIQUE,
    -- {name, mcc, country} as the network sent them.
    merchant jsonb NOT NULL,
    -- Every rule of the decision and its outcome.
    trail jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- When an uncaptured hold expires (cards.hold_expiry_hours after approval).
    expires_at timestamptz,
    CHECK ((status = 'declined') = (decline_code IS NOT NULL)),
    CHECK (status <> 'pending' OR (hold_transfer_id IS NOT NULL AND expires_at IS NOT NULL)),
    CHECK (card_id IS NOT NULL OR status = 'declined')
);
CREATE UNIQUE INDEX card_authorizations_network_idx
    ON card_authorizations (partner_id, network_transaction_id);
CREATE INDEX card_authorizations_partner_idx ON card_authorizations (partner_id, id DESC);
CREATE INDEX card_authorizations_card_idx ON card_authorizations (card_id, id DESC);
CREATE INDEX card_authorizations_due_idx ON card_authorizations (expires_at)
    WHERE status = 'pending';

-- What happened to an authorization after it was decided (increments, captures, reversals,
-- expiries) and refunds (merchant credits, linked to an authorization when given).
-- Append-only.
CREATE TABLE card_operations (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    card_id uuid NOT NULL REFERENCES card_cards (id),
    authorization_id uuid REFERENCES card_authorizations (id),
    kind text NOT NULL CHECK (kind IN ('increment', 'capture', 'reversal', 'expiry', 'refund')),
    approved boolean NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    network_transaction_id text CHECK (char_length(network_transaction_id) BETWEEN 1 AND 64),
    -- The ledger transfer that moved the money (none for a declined increment).
    transfer_id uuid,
    -- Kind-specific: a refund's merchant, a capture's shortfall, an increment's decline.
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL,
    CHECK (kind = 'refund' OR authorization_id IS NOT NULL)
);
CREATE UNIQUE INDEX card_operations_network_idx
    ON card_operations (partner_id, kind, network_transaction_id);
CREATE INDEX card_operations_authorization_idx ON card_operations (authorization_id, created_at);
CREATE TRIGGER card_operations_append_only
    BEFORE UPDATE OR DELETE ON card_operations
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();

-- What each card has spent in the calendar windows (UTC) that contain its last change: the
-- limit counters. Rolled over on read when a window has passed; changed only under the card's
-- advisory lock, in the transaction that moves the money.
CREATE TABLE card_spend (
    card_id uuid PRIMARY KEY REFERENCES card_cards (id),
    day date NOT NULL,
    day_amount bigint NOT NULL CHECK (day_amount >= 0),
    day_count integer NOT NULL CHECK (day_count >= 0),
    week date NOT NULL,
    week_amount bigint NOT NULL CHECK (week_amount >= 0),
    month date NOT NULL,
    month_amount bigint NOT NULL CHECK (month_amount >= 0),
    year date NOT NULL,
    year_amount bigint NOT NULL CHECK (year_amount >= 0),
    lifetime_amount bigint NOT NULL CHECK (lifetime_amount >= 0),
    updated_at timestamptz NOT NULL
);

-- The same counters per merchant category group, for the groups a card has limits on
-- (`limits.categories`); rolled over and changed like card_spend, under the same lock.
CREATE TABLE card_category_spend (
    card_id uuid NOT NULL REFERENCES card_cards (id),
    category text NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]*$'),
    day date NOT NULL,
    day_amount bigint NOT NULL CHECK (day_amount >= 0),
    day_count integer NOT NULL CHECK (day_count >= 0),
    week date NOT NULL,
    week_amount bigint NOT NULL CHECK (week_amount >= 0),
    month date NOT NULL,
    month_amount bigint NOT NULL CHECK (month_amount >= 0),
    year date NOT NULL,
    year_amount bigint NOT NULL CHECK (year_amount >= 0),
    lifetime_amount bigint NOT NULL CHECK (lifetime_amount >= 0),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (card_id, category)
);
