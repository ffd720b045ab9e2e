DROP TABLE wallet_status_changes;
DROP TABLE wallet_wallets;
