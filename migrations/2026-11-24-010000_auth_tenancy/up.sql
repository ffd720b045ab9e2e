-- Auth and tenancy: partners (tenants), their users and API keys, password resets, and the
-- audit log. Everything of a partner carries partner_id; nothing crosses partners.

CREATE TABLE auth_partners (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- Per-partner overrides of rate_limit.partner_per_hour / key_per_hour; NULL = the default.
    rate_limit_per_hour integer CHECK (rate_limit_per_hour > 0),
    key_rate_limit_per_hour integer CHECK (key_rate_limit_per_hour > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth_users (
    id uuid PRIMARY KEY,
    -- NULL only for platform admins (operators), who belong to no partner.
    partner_id uuid REFERENCES auth_partners (id),
    email text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('platform_admin', 'partner_admin', 'partner_developer')),
    failed_logins integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until timestamptz,
    -- Login tokens issued before this instant are refused (a reset ends every session).
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT auth_users_platform_admin_has_no_partner
        CHECK ((role = 'platform_admin') = (partner_id IS NULL))
);
-- Login is by email alone, so an email names one user across all partners.
CREATE UNIQUE INDEX auth_users_email_key ON auth_users (lower(email));
CREATE INDEX auth_users_partner_idx ON auth_users (partner_id, id);

CREATE TABLE auth_api_keys (
    id uuid PRIMARY KEY,
    partner_id uuid NOT NULL REFERENCES auth_partners (id),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The key's recognisable start (flk_live_AbCd), to tell keys apart in lists.
    hint text NOT NULL,
    -- HMAC-SHA256 of the secret under auth.api_key_secret; the secret itself is never stored.
    secret_digest bytea NOT NULL UNIQUE CHECK (length(secret_digest) = 32),
    -- NULL: full access for the partner; else e.g. {wallets:read,payments:write}.
    scopes text[],
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_api_keys_partner_idx ON auth_api_keys (partner_id, id DESC);

CREATE TABLE auth_password_resets (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES auth_users (id),
    token_digest bytea NOT NULL UNIQUE CHECK (length(token_digest) = 32),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_password_resets_user_idx ON auth_password_resets (user_id);

-- Who did what, when, from where: logins, key and user changes, and later every admin action
-- of any module. Append-only.
CREATE TABLE auth_audit_log (
    id uuid PRIMARY KEY,
    partner_id uuid,
    actor_type text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'operator', 'anonymous', 'system')),
    actor_id text,
    action text NOT NULL,
    target_type text,
    target_id text,
    ip text,
    request_id text,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_audit_log_partner_idx ON auth_audit_log (partner_id, id DESC);
CREATE INDEX auth_audit_log_action_idx ON auth_audit_log (action, id DESC);
CREATE TRIGGER auth_audit_log_append_only
    BEFORE UPDATE OR DELETE ON auth_audit_log
    FOR EACH ROW EXECUTE FUNCTION platform_forbid_change();
