ALTER TABLE platform_idempotency_keys RESET (fillfactor);
