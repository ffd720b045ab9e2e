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

diesel::table! {
    ledger_accounts (id) {
        id -> Uuid,
        partner_id -> Nullable<Uuid>,
        currency -> Text,
        code -> Int4,
        flags -> Int4,
        metadata -> Nullable<Jsonb>,
        debits_pending -> Int8,
        debits_posted -> Int8,
        credits_pending -> Int8,
        credits_posted -> Int8,
        entry_seq -> Int8,
        created_at -> Timestamptz,
        partner_books -> Bool,
    }
}

diesel::table! {
    /// Posted transfers (`result` NULL) and failed ones (`result` their code, and NULL in the
    /// columns below that are declared NOT NULL here): every diesel query on this table
    /// selects posted rows only (`result.is_null()`); the engine reads failures itself.
    ledger_transfers (id) {
        id -> Uuid,
        partner_id -> Nullable<Uuid>,
        debit_account_id -> Uuid,
        credit_account_id -> Uuid,
        amount -> Int8,
        currency -> Text,
        code -> Int4,
        flags -> Int4,
        pending_id -> Nullable<Uuid>,
        timeout_secs -> Nullable<Int4>,
        expires_at -> Nullable<Timestamptz>,
        metadata -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        result -> Nullable<Text>,
    }
}

diesel::table! {
    ledger_entries (account_id, seq) {
        account_id -> Uuid,
        seq -> Int8,
        transfer_id -> Uuid,
        is_credit -> Bool,
        pending_delta -> Int8,
        posted_delta -> Int8,
        debits_pending -> Int8,
        debits_posted -> Int8,
        credits_pending -> Int8,
        credits_posted -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    ledger_failed_transfers (id) {
        id -> Uuid,
        partner_id -> Nullable<Uuid>,
        result -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    ledger_pending_expiry (transfer_id) {
        transfer_id -> Uuid,
        expires_at -> Timestamptz,
        claimed_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    notify_events (id) {
        id -> Uuid,
        partner_id -> Nullable<Uuid>,
        #[sql_name = "type"]
        event_type -> Text,
        data -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    notify_endpoints (id) {
        id -> Uuid,
        partner_id -> Uuid,
        url -> Text,
        description -> Nullable<Text>,
        event_filters -> Array<Text>,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamptz>,
        alert_email -> Nullable<Text>,
        failing_since -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    notify_deliveries (id) {
        id -> Uuid,
        event_id -> Uuid,
        endpoint_id -> Uuid,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        claimed_until -> Nullable<Timestamptz>,
        last_attempt_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    notify_attempts (id) {
        id -> Uuid,
        delivery_id -> Uuid,
        endpoint_id -> Uuid,
        event_id -> Uuid,
        attempt -> Int4,
        status_code -> Nullable<Int4>,
        latency_ms -> Int4,
        error -> Nullable<Text>,
        response_excerpt -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    notify_emails (id) {
        id -> Uuid,
        recipient -> Text,
        template_name -> Text,
        template -> Nullable<Jsonb>,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        claimed_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    kyc_customers (id) {
        id -> Uuid,
        partner_id -> Uuid,
        external_id -> Nullable<Text>,
        email_enc -> Nullable<Text>,
        email_hash -> Nullable<Bytea>,
        first_name_enc -> Text,
        last_name_enc -> Text,
        date_of_birth_enc -> Text,
        address_enc -> Nullable<Text>,
        country -> Text,
        kyc_status -> Text,
        kyc_tier -> Int2,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    kyc_applications (id) {
        id -> Uuid,
        partner_id -> Uuid,
        customer_id -> Uuid,
        status -> Text,
        requested_tier -> Int2,
        granted_tier -> Nullable<Int2>,
        origin -> Text,
        document_enc -> Nullable<Text>,
        document_hash -> Nullable<Bytea>,
        outcome -> Jsonb,
        submitted_by -> Text,
        last_actor -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        decided_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    kyc_transitions (id) {
        id -> Int8,
        application_id -> Uuid,
        from_status -> Nullable<Text>,
        to_status -> Text,
        actor -> Text,
        reason -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    kyc_sanctions_lists (name) {
        name -> Text,
        version -> Int8,
        format -> Text,
        entries -> Int4,
        sha256 -> Text,
        loaded_at -> Timestamptz,
    }
}

diesel::table! {
    kyc_sanctions_entries (id) {
        id -> Int8,
        list_name -> Text,
        reference -> Text,
        name -> Text,
        aliases -> Array<Text>,
        date_of_birth -> Nullable<Text>,
        country -> Nullable<Text>,
        program -> Nullable<Text>,
        kind -> Text,
    }
}

diesel::table! {
    kyc_usage (customer_id, currency) {
        customer_id -> Uuid,
        currency -> Text,
        day -> Date,
        day_total -> Int8,
        month -> Date,
        month_total -> Int8,
    }
}

diesel::table! {
    wallet_wallets (id) {
        id -> Uuid,
        partner_id -> Uuid,
        customer_id -> Uuid,
        account_id -> Uuid,
        currency -> Text,
        kind -> Text,
        status -> Text,
        freeze_mode -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    wallet_status_changes (id) {
        id -> Int8,
        wallet_id -> Uuid,
        from_status -> Nullable<Text>,
        to_status -> Text,
        freeze_mode -> Nullable<Text>,
        reason -> Text,
        actor -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    payment_payments (id) {
        id -> Uuid,
        partner_id -> Uuid,
        kind -> Text,
        status -> Text,
        from_wallet_id -> Nullable<Uuid>,
        to_wallet_id -> Nullable<Uuid>,
        amount -> Int8,
        currency -> Text,
        description -> Nullable<Text>,
        transfer_id -> Uuid,
        rail -> Nullable<Jsonb>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        settlement_transfer_id -> Nullable<Uuid>,
        settle_after -> Nullable<Timestamptz>,
        refund_of -> Nullable<Uuid>,
    }
}

diesel::table! {
    payment_rail_accounts (currency) {
        currency -> Text,
        account_id -> Uuid,
    }
}

diesel::table! {
    platform_idempotency_keys (scope, key) {
        scope -> Uuid,
        key -> Text,
        fingerprint -> Bytea,
        status -> Nullable<Int2>,
        response_body -> Nullable<Bytea>,
        content_type -> Nullable<Text>,
        locked_at -> Timestamptz,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    card_cards (id) {
        id -> Uuid,
        partner_id -> Uuid,
        wallet_id -> Uuid,
        customer_id -> Uuid,
        currency -> Text,
        kind -> Text,
        status -> Text,
        cancel_reason -> Nullable<Text>,
        cardholder_name -> Nullable<Text>,
        brand -> Text,
        last4 -> Text,
        expires_on -> Date,
        controls -> Jsonb,
        replaces -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    card_vault (card_id) {
        card_id -> Uuid,
        pan_enc -> Text,
        pan_hash -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    card_status_changes (id) {
        id -> Int8,
        card_id -> Uuid,
        from_status -> Nullable<Text>,
        to_status -> Text,
        reason -> Text,
        actor -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    card_reveals (id) {
        id -> Int8,
        card_id -> Uuid,
        partner_id -> Uuid,
        actor -> Text,
        request_id -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    card_settlement_accounts (currency, shard) {
        currency -> Text,
        shard -> Int2,
        account_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    card_operations (id) {
        id -> Uuid,
        partner_id -> Uuid,
        card_id -> Uuid,
        authorization_id -> Nullable<Uuid>,
        kind -> Text,
        approved -> Bool,
        amount -> Int8,
        network_transaction_id -> Nullable<Text>,
        transfer_id -> Nullable<Uuid>,
        detail -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    card_spend (card_id) {
        card_id -> Uuid,
        day -> Date,
        day_amount -> Int8,
        day_count -> Int4,
        week -> Date,
        week_amount -> Int8,
        month -> Date,
        month_amount -> Int8,
        year -> Date,
        year_amount -> Int8,
        lifetime_amount -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(card_vault -> card_cards (card_id));
diesel::allow_tables_to_appear_in_same_query!(card_cards, card_vault, card_spend);

diesel::table! {
    card_decision_endpoints (partner_id) {
        partner_id -> Uuid,
        url -> Text,
        secret_enc -> Text,
        fallback -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}
