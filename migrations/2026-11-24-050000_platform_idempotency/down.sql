DROP TABLE IF EXISTS platform_idempotency_keys;
