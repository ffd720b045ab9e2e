DROP TABLE card_category_spend;
DROP TABLE card_spend;
DROP TABLE card_operations;
DROP TABLE card_authorizations;
DROP TABLE card_settlement_accounts;
