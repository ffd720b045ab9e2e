DROP FUNCTION IF EXISTS platform_forbid_change();
