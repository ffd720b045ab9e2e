-- A partner's real-time decision endpoint for card authorizations: at most one per partner.
-- The signing secret is never stored in clear: it is sealed with the card vault (AES-256-GCM,
-- "<kid>:<base64>", bound to the partner's id), like the card numbers in card_vault, and
-- re-sealed by `flowlet admin cards reencrypt` after a key rotation.
CREATE TABLE card_decision_endpoints (
    partner_id uuid PRIMARY KEY,
    url text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    secret_enc text NOT NULL,
    -- What applies when the endpoint does not answer in time, or fails.
    fallback text NOT NULL CHECK (fallback IN ('approve', 'decline')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
