DROP TABLE card_reveals;
DROP TABLE card_status_changes;
DROP TABLE card_vault;
DROP TABLE card_cards;
