DROP TABLE IF EXISTS notify_emails;
DROP TABLE IF EXISTS notify_attempts;
DROP TABLE IF EXISTS notify_deliveries;
DROP TABLE IF EXISTS notify_endpoints;
DROP TABLE IF EXISTS notify_events;
