-- Idempotency keys of POST requests (API.md "Idempotency"): one row per (partner, key) claims
-- the key while its first request runs (status NULL) and then keeps that request's response,
-- replayed byte for byte to retries until expires_at. Handlers that write in a transaction
-- store the response in that same transaction, so the key and the effects commit together.

CREATE TABLE platform_idempotency_keys (
    -- The partner (or, for platform admins, the acting user or API key).
    scope uuid NOT NULL,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of the method, the path with its query and the raw body.
    fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
    -- NULL while the first request runs; then its HTTP status.
    status smallint CHECK (status BETWEEN 100 AND 599),
    response_body bytea,
    content_type text,
    -- When the running request claimed the key; also its ownership token (a takeover after
    -- idempotency.lock_timeout_secs changes it, so the earlier owner can no longer complete).
    locked_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK ((status IS NULL) = (response_body IS NULL))
);
CREATE INDEX platform_idempotency_keys_expires_idx ON platform_idempotency_keys (expires_at);
