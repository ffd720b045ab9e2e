-- Withdrawals hold the money as a pending ledger transfer (the payment's id) and settle with a
-- second transfer (settlement_transfer_id, chosen up front so settling twice is harmless) that
-- posts or voids it once the rail answers, not before settle_after. Refunds reference the
-- payment they return money of.
ALTER TABLE payment_payments
    ADD COLUMN settlement_transfer_id uuid UNIQUE,
    ADD COLUMN settle_after timestamptz,
    ADD COLUMN refund_of uuid REFERENCES payment_payments (id);
CREATE INDEX payment_payments_settlement_idx ON payment_payments (settle_after)
    WHERE status = 'pending' AND kind = 'withdrawal';
CREATE INDEX payment_payments_refund_of_idx ON payment_payments (refund_of)
    WHERE refund_of IS NOT NULL;
