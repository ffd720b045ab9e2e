//! Verification: every invariant of the books as a query of its violations, and the trial
//! balance.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Int4, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// One broken invariant found by [`verify`], as the query returns it (the ledger's face
/// hands out `service::Violation`).
#[derive(Debug, Clone, QueryableByName)]
pub struct ViolationRow {
    #[diesel(sql_type = Text)]
    pub check: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Text)]
    pub detail: String,
}

/// One check of [`verify`]: its name (the `check` of its violations), what it guards, and
/// the query that lists its violations (at most 100).
pub struct Check {
    pub name: &'static str,
    pub about: &'static str,
    sql: &'static str,
}

/// Every invariant of the books, recomputed from entries and transfers (the cached totals are
/// checked against them). Sums and sums of totals are computed in `numeric`: a check can
/// never fail on the books it checks (a 64-bit overflow), only report them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "debits_equal_credits",
        about: "per currency, the entries' debits equal their credits (posted and pending)",
        sql: "SELECT 'debits_equal_credits' AS check, d.currency AS subject, \
                format('entries: debits posted %s, credits posted %s, debits pending %s, credits pending %s', \
                  d.dpo, d.cpo, d.dp, d.cp) AS detail \
         FROM (SELECT a.currency, \
                 coalesce(sum(e.posted_delta::numeric) FILTER (WHERE NOT e.is_credit), 0) AS dpo, \
                 coalesce(sum(e.posted_delta::numeric) FILTER (WHERE e.is_credit), 0) AS cpo, \
                 coalesce(sum(e.pending_delta::numeric) FILTER (WHERE NOT e.is_credit), 0) AS dp, \
                 coalesce(sum(e.pending_delta::numeric) FILTER (WHERE e.is_credit), 0) AS cp \
               FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id GROUP BY a.currency) d \
         WHERE d.dpo <> d.cpo OR d.dp <> d.cp LIMIT 100",
    },
    Check {
        name: "totals_balance",
        about: "per currency, the accounts' cached debits equal their cached credits",
        sql: "SELECT 'totals_balance' AS check, currency AS subject, \
                format('debits posted %s, credits posted %s, debits pending %s, credits pending %s', \
                  dpo, cpo, dp, cp) AS detail \
         FROM (SELECT currency, sum(debits_posted::numeric) AS dpo, sum(credits_posted::numeric) AS cpo, \
                 sum(debits_pending::numeric) AS dp, sum(credits_pending::numeric) AS cp \
               FROM ledger_accounts GROUP BY currency) t \
         WHERE dpo <> cpo OR dp <> cp LIMIT 100",
    },
    Check {
        name: "account_equals_entries",
        about: "every account's four totals and entry count equal the sums of its entries",
        sql: "SELECT 'account_equals_entries' AS check, a.id::text AS subject, \
                format('cached %s/%s/%s/%s, entries %s/%s/%s/%s', a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, \
                  coalesce(s.dp, 0), coalesce(s.dpo, 0), coalesce(s.cp, 0), coalesce(s.cpo, 0)) AS detail \
         FROM ledger_accounts a LEFT JOIN ( \
           SELECT account_id, \
             sum(pending_delta::numeric) FILTER (WHERE NOT is_credit) AS dp, sum(posted_delta::numeric) FILTER (WHERE NOT is_credit) AS dpo, \
             sum(pending_delta::numeric) FILTER (WHERE is_credit) AS cp, sum(posted_delta::numeric) FILTER (WHERE is_credit) AS cpo, \
             count(*) AS n FROM ledger_entries GROUP BY account_id) s ON s.account_id = a.id \
         WHERE a.debits_pending <> coalesce(s.dp, 0) OR a.debits_posted <> coalesce(s.dpo, 0) \
            OR a.credits_pending <> coalesce(s.cp, 0) OR a.credits_posted <> coalesce(s.cpo, 0) \
            OR a.entry_seq <> coalesce(s.n, 0) LIMIT 100",
    },
    Check {
        name: "entry_chain",
        about: "each entry's totals-after follow from the account's previous entry and its own amounts",
        sql: "SELECT 'entry_chain' AS check, account_id::text || '#' || seq AS subject, 'totals after do not follow from the previous entry' AS detail \
         FROM (SELECT *, \
             lag(debits_pending::numeric, 1, 0) OVER w AS p_dp, lag(debits_posted::numeric, 1, 0) OVER w AS p_dpo, \
             lag(credits_pending::numeric, 1, 0) OVER w AS p_cp, lag(credits_posted::numeric, 1, 0) OVER w AS p_cpo, \
             lag(seq, 1, 0::bigint) OVER w AS p_seq \
           FROM ledger_entries WINDOW w AS (PARTITION BY account_id ORDER BY seq)) x \
         WHERE seq <> p_seq + 1 \
            OR (NOT is_credit AND (debits_pending <> p_dp + pending_delta OR debits_posted <> p_dpo + posted_delta \
                                   OR credits_pending <> p_cp OR credits_posted <> p_cpo)) \
            OR (is_credit AND (credits_pending <> p_cp + pending_delta OR credits_posted <> p_cpo + posted_delta \
                               OR debits_pending <> p_dp OR debits_posted <> p_dpo)) LIMIT 100",
    },
    Check {
        name: "never_negative",
        about: "no account with debits_must_not_exceed_credits ever owed more than it held, at any entry",
        sql: "SELECT 'never_negative' AS check, e.account_id::text || '#' || e.seq AS subject, \
                format('debits %s + %s pending over credits %s', e.debits_posted, e.debits_pending, e.credits_posted) AS detail \
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE a.flags & 1 <> 0 AND e.debits_posted::numeric + e.debits_pending > e.credits_posted LIMIT 100",
    },
    Check {
        name: "credits_within_debits",
        about: "no account with credits_must_not_exceed_debits ever went beyond its debits, at any entry",
        sql: "SELECT 'credits_within_debits' AS check, e.account_id::text || '#' || e.seq AS subject, \
                format('credits %s + %s pending over debits %s', e.credits_posted, e.credits_pending, e.debits_posted) AS detail \
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE a.flags & 2 <> 0 AND e.credits_posted::numeric + e.credits_pending > e.debits_posted LIMIT 100",
    },
    Check {
        name: "transfer_entries",
        about: "every transfer has exactly one debit entry on its debit account and one credit entry on its \
                credit account, both moving its amount (a post or void releasing its pending transfer's)",
        sql: "SELECT 'transfer_entries' AS check, t.id::text AS subject, \
                format('%s debit and %s credit entries; debit moved %s posted / %s pending, credit %s / %s; \
                        transfer amount %s', \
                  count(e.*) FILTER (WHERE NOT e.is_credit), count(e.*) FILTER (WHERE e.is_credit), \
                  max(e.posted_delta) FILTER (WHERE NOT e.is_credit), max(e.pending_delta) FILTER (WHERE NOT e.is_credit), \
                  max(e.posted_delta) FILTER (WHERE e.is_credit), max(e.pending_delta) FILTER (WHERE e.is_credit), \
                  t.amount) AS detail \
         FROM ledger_transfers t \
         LEFT JOIN ledger_transfers p ON p.id = t.pending_id \
         LEFT JOIN ledger_entries e ON e.transfer_id = t.id \
         WHERE t.result IS NULL \
         GROUP BY t.id, t.debit_account_id, t.credit_account_id, t.amount, t.flags, p.amount \
         HAVING count(*) FILTER (WHERE NOT e.is_credit AND e.account_id = t.debit_account_id) <> 1 \
             OR count(*) FILTER (WHERE e.is_credit AND e.account_id = t.credit_account_id) <> 1 \
             OR count(e.*) <> 2 \
             OR bool_or(e.posted_delta <> CASE WHEN t.flags & 2 <> 0 OR t.flags & 8 <> 0 THEN 0 ELSE t.amount END) \
             OR bool_or(e.pending_delta <> CASE WHEN t.flags & 2 <> 0 THEN t.amount \
                                                WHEN t.flags & 12 <> 0 THEN -coalesce(p.amount, 0) \
                                                ELSE 0 END) \
         LIMIT 100",
    },
    Check {
        name: "orphan_entry",
        about: "no entry without its transfer",
        sql: "SELECT 'orphan_entry' AS check, e.account_id::text || '#' || e.seq AS subject, 'entry without a transfer' AS detail \
         FROM ledger_entries e LEFT JOIN ledger_transfers t ON t.id = e.transfer_id WHERE t.id IS NULL LIMIT 100",
    },
    Check {
        name: "pending_resolved_once",
        about: "a pending transfer is posted or voided at most once",
        sql: "SELECT 'pending_resolved_once' AS check, pending_id::text AS subject, format('%s resolutions', count(*)) AS detail \
         FROM ledger_transfers WHERE pending_id IS NOT NULL GROUP BY pending_id HAVING count(*) > 1 LIMIT 100",
    },
    Check {
        name: "pending_totals",
        about: "every account's pending totals equal the amounts of its open (unresolved) pending transfers",
        sql: "SELECT 'pending_totals' AS check, a.id::text AS subject, \
                format('pending debits %s, credits %s; open pending transfers debit %s, credit %s', \
                  a.debits_pending, a.credits_pending, coalesce(d.open, 0), coalesce(c.open, 0)) AS detail \
         FROM ledger_accounts a \
         LEFT JOIN (SELECT t.debit_account_id AS id, sum(t.amount::numeric) AS open FROM ledger_transfers t \
                    WHERE t.flags & 2 <> 0 AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id) \
                    GROUP BY t.debit_account_id) d ON d.id = a.id \
         LEFT JOIN (SELECT t.credit_account_id AS id, sum(t.amount::numeric) AS open FROM ledger_transfers t \
                    WHERE t.flags & 2 <> 0 AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id) \
                    GROUP BY t.credit_account_id) c ON c.id = a.id \
         WHERE a.debits_pending <> coalesce(d.open, 0) OR a.credits_pending <> coalesce(c.open, 0) LIMIT 100",
    },
    Check {
        name: "within_limits",
        about: "no account with a limit flag is beyond it now",
        sql: "SELECT 'within_limits' AS check, id::text AS subject, \
                format('debits %s + %s pending, credits %s + %s pending', debits_posted, debits_pending, credits_posted, credits_pending) AS detail \
         FROM ledger_accounts \
         WHERE (flags & 1 <> 0 AND debits_posted::numeric + debits_pending > credits_posted) \
            OR (flags & 2 <> 0 AND credits_posted::numeric + credits_pending > debits_posted) LIMIT 100",
    },
    Check {
        name: "failed_moved_nothing",
        about: "a failed transfer moved nothing: no entry names it",
        sql: "SELECT 'failed_moved_nothing' AS check, t.id::text AS subject, \
                format('failed with %s, yet has entries', t.result) AS detail \
         FROM ledger_transfers t JOIN ledger_entries e ON e.transfer_id = t.id \
         WHERE t.result IS NOT NULL LIMIT 100",
    },
    Check {
        name: "failed_and_posted",
        about: "no transfer id is both failed and posted (failures recorded by the previous version too)",
        sql: "SELECT 'failed_and_posted' AS check, f.id::text AS subject, \
                format('failed with %s, yet posted', f.result) AS detail \
         FROM ledger_failed_transfers f JOIN ledger_transfers t ON t.id = f.id AND t.result IS NULL \
         LIMIT 100",
    },
];

/// Runs every check of [`CHECKS`]; the violations, at most 100 per check, in check order.
pub async fn verify(conn: &mut AsyncPgConnection) -> QueryResult<Vec<ViolationRow>> {
    let mut violations = Vec::new();
    for check in CHECKS {
        let found: Vec<ViolationRow> = diesel::sql_query(check.sql).load(conn).await?;
        violations.extend(found);
    }
    Ok(violations)
}

/// Per currency and account code: the posted and pending totals (sums as decimal text,
/// since they can exceed 64 bits), as the query returns them.
#[derive(Debug, Clone, QueryableByName)]
pub struct TrialBalanceRow {
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = Int4)]
    pub code: i32,
    #[diesel(sql_type = BigInt)]
    pub accounts: i64,
    #[diesel(sql_type = Text)]
    pub debits_posted: String,
    #[diesel(sql_type = Text)]
    pub credits_posted: String,
    #[diesel(sql_type = Text)]
    pub debits_pending: String,
    #[diesel(sql_type = Text)]
    pub credits_pending: String,
}

pub async fn trial_balance(
    conn: &mut AsyncPgConnection,
    currency: Option<String>,
) -> QueryResult<Vec<TrialBalanceRow>> {
    diesel::sql_query(
        "SELECT currency, code, count(*) AS accounts, \
                sum(debits_posted)::text AS debits_posted, sum(credits_posted)::text AS credits_posted, \
                sum(debits_pending)::text AS debits_pending, sum(credits_pending)::text AS credits_pending \
         FROM ledger_accounts WHERE $1::text IS NULL OR currency = $1 \
         GROUP BY currency, code ORDER BY currency, code",
    )
    .bind::<Nullable<Text>, _>(currency)
    .load(conn)
    .await
}
