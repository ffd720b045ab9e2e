-- Customers and KYC. Personal data is stored only as AES-256-GCM ciphertext
-- ("<key id>:<base64 nonce||ciphertext||tag>", the key id beside each value for rotation);
-- the fields that must be searchable also carry an HMAC-SHA256 keyed hash.

CREATE TABLE kyc_customers (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    external_id text,
    email_enc text,
    email_hash bytea,
    first_name_enc text NOT NULL,
    last_name_enc text NOT NULL,
    date_of_birth_enc text NOT NULL,
    address_enc text,
    -- ISO 3166-1 alpha-2 country of residence; kept clear for screening and reporting.
    country text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    kyc_status text NOT NULL DEFAULT 'none'
        CHECK (kyc_status IN ('none', 'pending', 'awaiting_documents', 'approved', 'rejected', 'review')),
    kyc_tier smallint NOT NULL DEFAULT 0 CHECK (kyc_tier BETWEEN 0 AND 2),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX kyc_customers_external_id_key ON kyc_customers (partner_id, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX kyc_customers_partner_idx ON kyc_customers (partner_id, id DESC);
CREATE INDEX kyc_customers_email_idx ON kyc_customers (partner_id, email_hash)
    WHERE email_hash IS NOT NULL;

CREATE TABLE kyc_applications (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL,
    customer_id uuid NOT NULL REFERENCES kyc_customers (id),
    status text NOT NULL
        CHECK (status IN ('pending', 'awaiting_documents', 'approved', 'rejected', 'review')),
    requested_tier smallint NOT NULL CHECK (requested_tier BETWEEN 1 AND 2),
    -- The tier granted by an approval.
    granted_tier smallint CHECK (granted_tier BETWEEN 1 AND 2),
    -- 'submission' (by the partner) or 'rescreening' (after a sanctions list load).
    origin text NOT NULL CHECK (origin IN ('submission', 'rescreening')),
    -- The identity document, sealed as one JSON value {type, number, country, expiry}.
    document_enc text,
    document_hash bytea,
    -- What the checks found and decided: {checks: [{name, result, code, detail}],
    -- screening: [candidates for the reviewer], missing: [...], code, reason}.
    outcome jsonb NOT NULL DEFAULT '{}',
    submitted_by text NOT NULL,
    last_actor text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    decided_at timestamptz
);
-- At most one open application per customer.
CREATE UNIQUE INDEX kyc_applications_open_key ON kyc_applications (customer_id)
    WHERE status IN ('pending', 'awaiting_documents', 'review');
CREATE INDEX kyc_applications_customer_idx ON kyc_applications (customer_id, id DESC);
CREATE INDEX kyc_applications_status_idx ON kyc_applications (status, id DESC);
CREATE INDEX kyc_applications_document_idx ON kyc_applications (partner_id, document_hash)
    WHERE document_hash IS NOT NULL;

-- Every state change, append-only: who (a system rule or a user), why, when.
CREATE TABLE kyc_transitions (
    id bigserial PRIMARY KEY,
    application_id uuid NOT NULL REFERENCES kyc_applications (id),
    from_status text,
    to_status text NOT NULL,
    -- 'system:<rule>' or a user / API key id ('usr_...', 'key_...').
    actor text NOT NULL,
    reason text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX kyc_transitions_application_idx ON kyc_transitions (application_id, id);
CREATE TRIGGER kyc_transitions_append_only
    BEFORE UPDATE OR DELETE ON kyc_transitions
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();

-- Screening lists: one row per loaded list, its entries replaced as a whole on each load.
CREATE TABLE kyc_sanctions_lists (
    name text PRIMARY KEY,
    version bigint NOT NULL,
    format text NOT NULL,
    entries integer NOT NULL,
    sha256 text NOT NULL,
    loaded_at timestamptz NOT NULL
);

CREATE TABLE kyc_sanctions_entries (
    id bigserial PRIMARY KEY,
    list_name text NOT NULL REFERENCES kyc_sanctions_lists (name),
    reference text NOT NULL,
    name text NOT NULL,
    aliases text[] NOT NULL DEFAULT '{}',
    -- 'YYYY-MM-DD' or 'YYYY'.
    date_of_birth text,
    country text,
    program text,
    kind text NOT NULL
);
CREATE INDEX kyc_sanctions_entries_list_idx ON kyc_sanctions_entries (list_name);

-- Outgoing money per customer and currency in the current UTC day and calendar month, for the
-- tier limits. Locked (FOR UPDATE) by the Compliance check inside the mover's transaction.
CREATE TABLE kyc_usage (
    customer_id uuid NOT NULL REFERENCES kyc_customers (id),
    currency text NOT NULL,
    day date NOT NULL,
    day_total bigint NOT NULL CHECK (day_total >= 0),
    month date NOT NULL,
    month_total bigint NOT NULL CHECK (month_total >= 0),
    PRIMARY KEY (customer_id, currency)
);
