DROP TABLE kyc_usage;
DROP TABLE kyc_sanctions_entries;
DROP TABLE kyc_sanctions_lists;
DROP TABLE kyc_transitions;
DROP TABLE kyc_applications;
DROP TABLE kyc_customers;
