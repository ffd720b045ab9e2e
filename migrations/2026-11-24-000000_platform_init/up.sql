-- Platform groundwork shared by every module.
--
-- Append-only tables (ledger transfers and entries, decision and audit trails) attach this
-- trigger function BEFORE UPDATE OR DELETE, so history cannot be rewritten by any code path or
-- any operator's ad-hoc SQL: corrections are new rows (reversals), never edits.
CREATE FUNCTION platform_forbid_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is forbidden: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;
