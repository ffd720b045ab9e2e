ALTER TABLE payment_payments
    DROP COLUMN refund_of,
    DROP COLUMN settle_after,
    DROP COLUMN settlement_transfer_id;
