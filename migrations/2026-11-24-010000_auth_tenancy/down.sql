DROP TABLE IF EXISTS auth_audit_log;
DROP TABLE IF EXISTS auth_password_resets;
DROP TABLE IF EXISTS auth_api_keys;
DROP TABLE IF EXISTS auth_users;
DROP TABLE IF EXISTS auth_partners;
