DROP TABLE payment_rail_accounts;
DROP TABLE payment_payments;
