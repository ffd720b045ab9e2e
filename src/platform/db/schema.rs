//! The diesel schema of every table, in one file because diesel's `table!` types must be
//! shared for joins within a module. Ownership is by prefix: only `src/<module>/store.rs` may
//! name `<module>_*` tables (enforced by tests/architecture.rs).

diesel::table! {
    auth_partners (id) {
        id -> Uuid,
        name -> Text,
        email -> Text,
        status -> Text,
        rate_limit_per_hour -> Nullable<Int4>,
        key_rate_limit_per_hour -> Nullable<Int4>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    auth_users (id) {
        id -> Uuid,
        partner_id -> Nullable<Uuid>,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        failed_logins -> Int4,
        locked_until -> Nullable<Timestamptz>,
        password_changed_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    auth_api_keys (id) {
        id -> Uuid,
        partner_id -> Uuid,
        name -> Text,
        hint -> Text,
        secret_digest -> Bytea,
        scopes -> Nullable<Array<Text>>,
        expires_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        created_by -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    auth_password_resets (id) {
        id -> Uuid,
        user_id -> Uuid,
        token_digest -> Bytea,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    auth_audit_log (id) {
        id -> Uuid,
        partner_id -> Nullable<Uuid>,
        actor_type -> Text,
        actor_id -> Nullable<Text>,
        action -> Text,
        target_type -> Nullable<Text>,
        target_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        request_id -> Nullable<Text>,
        details -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(auth_api_keys -> auth_partners (partner_id));
diesel::joinable!(auth_users -> auth_partners (partner_id));
diesel::allow_tables_to_appear_in_same_query!(auth_partners, auth_users, auth_api_keys);
