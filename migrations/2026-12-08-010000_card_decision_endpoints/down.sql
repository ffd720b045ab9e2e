DROP TABLE card_decision_endpoints;
