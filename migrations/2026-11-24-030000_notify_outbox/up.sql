-- Events, webhook endpoints and a transactional outbox: an event and its deliveries are
-- written in the transaction of the change they describe, and delivered at least once by a
-- worker that claims rows with FOR UPDATE SKIP LOCKED.

CREATE TABLE notify_events (
    id uuid PRIMARY KEY,
    -- NULL: a platform-level event, delivered to no partner.
    partner_id uuid,
    type text NOT NULL CHECK (type ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX notify_events_partner_idx ON notify_events (partner_id, id DESC);
CREATE TRIGGER notify_events_append_only
    BEFORE UPDATE OR DELETE ON notify_events
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();

CREATE TABLE notify_endpoints (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    url text NOT NULL CHECK (length(url) <= 2048),
    description text CHECK (length(description) <= 500),
    -- Exact types, `payment.*` prefixes, or `*`.
    event_filters text[] NOT NULL CHECK (cardinality(event_filters) BETWEEN 1 AND 100),
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- whsec_ secrets: the current one signs; the previous one also signs until it expires.
    secret text NOT NULL,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    -- Who is told when the endpoint is disabled for failing too long.
    alert_email text,
    failing_since timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz
);
CREATE INDEX notify_endpoints_partner_idx ON notify_endpoints (partner_id, id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE notify_deliveries (
    id uuid PRIMARY KEY,
    event_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'skipped')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    claimed_until timestamptz,
    last_attempt_at timestamptz,
    created_at timestamptz NOT NULL,
    completed_at timestamptz
);
CREATE INDEX notify_deliveries_due_idx ON notify_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX notify_deliveries_endpoint_idx ON notify_deliveries (endpoint_id, status);
CREATE INDEX notify_deliveries_event_idx ON notify_deliveries (event_id);

CREATE TABLE notify_attempts (
    id uuid PRIMARY KEY,
    delivery_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    event_id uuid NOT NULL,
    attempt integer NOT NULL,
    status_code integer,
    latency_ms integer NOT NULL,
    error text,
    response_excerpt text,
    created_at timestamptz NOT NULL
);
CREATE INDEX notify_attempts_endpoint_idx ON notify_attempts (endpoint_id, id DESC);
CREATE TRIGGER notify_attempts_append_only
    BEFORE UPDATE OR DELETE ON notify_attempts
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();

CREATE TABLE notify_emails (
    id uuid PRIMARY KEY,
    recipient text NOT NULL,
    template_name text NOT NULL,
    -- The template and its data; cleared once sent, since it may carry a one-time token.
    template jsonb,
    status text NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    claimed_until timestamptz,
    last_error text,
    created_at timestamptz NOT NULL,
    sent_at timestamptz
);
CREATE INDEX notify_emails_due_idx ON notify_emails (next_attempt_at) WHERE status = 'pending';
