-- Cards on wallets. Only the last four digits of the number are here; the number itself is in
-- card_vault. The CVC is derived from the number and expiry under a key, so it is stored
-- nowhere.
CREATE TABLE card_cards (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    wallet_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    -- The wallet's currency (its ledger account comes from the wallets' face).
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind text NOT NULL CHECK (kind IN ('virtual', 'physical')),
    status text NOT NULL CHECK (status IN ('active', 'inactive', 'frozen', 'canceled')),
    -- Why a canceled card was canceled.
    cancel_reason text CHECK (cancel_reason IN ('canceled', 'lost', 'stolen')),
    cardholder_name text CHECK (char_length(cardholder_name) BETWEEN 1 AND 26),
    brand text NOT NULL CHECK (brand IN ('visa', 'mastercard')),
    last4 text NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    -- The last day the card is valid: the end of its expiry month.
    expires_on date NOT NULL,
    -- The spending controls as the API shows them.
    controls jsonb NOT NULL,
    -- A replacement names the card it replaced.
    replaces uuid REFERENCES card_cards (id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK ((status = 'canceled') = (cancel_reason IS NOT NULL))
);
CREATE INDEX card_cards_partner_idx ON card_cards (partner_id, id DESC);
CREATE INDEX card_cards_wallet_idx ON card_cards (wallet_id, id DESC);

-- The card numbers, apart from everything else about cards: sealed (AES-256-GCM, "<kid>:<base64>",
-- bound to the card's id) and found by their keyed hash (HMAC-SHA256).
CREATE TABLE card_vault (
    card_id uuid PRIMARY KEY REFERENCES card_cards (id),
    pan_enc text NOT NULL,
    pan_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);

-- Every status change, with who and why: append-only.
CREATE TABLE card_status_changes (
    id bigserial PRIMARY KEY,
    card_id uuid NOT NULL REFERENCES card_cards (id),
    from_status text,
    to_status text NOT NULL,
    reason text NOT NULL,
    actor text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX card_status_changes_card_idx ON card_status_changes (card_id, id);
CREATE TRIGGER card_status_changes_append_only
    BEFORE UPDATE OR DELETE ON card_status_changes
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();

-- Every reveal of a card's number: who, when, from where. Append-only; the per-card reveal
-- rate is counted here too.
CREATE TABLE card_reveals (
    id bigserial PRIMARY KEY,
    card_id uuid NOT NULL REFERENCES card_cards (id),
    partner_id uuid NOT NULL,
    actor text NOT NULL,
    request_id text,
    created_at timestamptz NOT NULL
);
CREATE INDEX card_reveals_card_idx ON card_reveals (card_id, created_at);
CREATE TRIGGER card_reveals_append_only
    BEFORE UPDATE OR DELETE ON card_reveals
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();
