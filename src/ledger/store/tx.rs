//! The engine's transaction: what comes back with BEGIN (its id, its clock, the planner
//! settings), the advisory locks of its lock plan, and its fate when the connection broke at
//! commit.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

crate::prepared_statement! {
    /// The transaction's id and the server's start (to learn its fate should the connection
    /// break at commit), and its start time (the batch's clock); and the batch's planner
    /// settings, for the rest of its transaction (see the engine: one statement, not three).
    TxInfoQuery -> (BigInt, Timestamptz, Timestamptz) {}
    "SELECT txid_current(), now(), pg_postmaster_start_time() \
     WHERE set_config('enable_seqscan', 'off', true) IS NOT NULL \
       AND set_config('plan_cache_mode', 'force_generic_plan', true) IS NOT NULL \
       AND set_config('jit', 'off', true) IS NOT NULL"
}

/// A batch's transaction, as [`tx_info`] reads it with BEGIN.
#[derive(Debug, Clone, Copy)]
pub struct TxInfo {
    pub txid: i64,
    /// The transaction's start: the batch's clock.
    pub now: DateTime<Utc>,
    /// When the server started: a restart since means the transaction died with it.
    pub server_started: DateTime<Utc>,
}

/// The current transaction's id, start time and server (see [`TxInfoQuery`]).
pub async fn tx_info(conn: &AsyncPgConnection) -> QueryResult<TxInfo> {
    let mut conn = conn;
    let (txid, now, server_started) = TxInfoQuery {}.get_result(&mut conn).await?;
    Ok(TxInfo {
        txid,
        now,
        server_started,
    })
}

/// What the database says of a batch whose connection broke: see [`tx_fate`].
#[derive(QueryableByName)]
pub struct TxFate {
    /// When the server answering started.
    #[diesel(sql_type = Timestamptz)]
    pub server_started: DateTime<Utc>,
    /// `committed`, `aborted` or `in progress`; `None` when too old to tell. Meaningful only
    /// on the server the transaction ran on (ids are reused after a crash).
    #[diesel(sql_type = Nullable<Text>)]
    pub status: Option<String>,
    /// How many of the batch's registered ids exist.
    #[diesel(sql_type = BigInt)]
    pub present: i64,
}

/// The server's start, transaction `txid`'s status and how many of `ids` are registered.
pub async fn tx_fate(
    conn: &mut AsyncPgConnection,
    txid: i64,
    ids: Vec<Uuid>,
) -> QueryResult<TxFate> {
    diesel::sql_query(
        "SELECT pg_postmaster_start_time() AS server_started, txid_status($1) AS status, \
                (SELECT count(*) FROM ledger_transfers WHERE id = ANY($2)) AS present",
    )
    .bind::<BigInt, _>(txid)
    .bind::<Array<SqlUuid>, _>(ids)
    .get_result(conn)
    .await
}

crate::prepared_statement! {
    /// Transaction-scoped advisory locks, in the order given (its SQL type is never read): a
    /// key exclusive, or a bucket (in the plan's class) shared or exclusive; see the engine's
    /// `LockPlan`.
    AdvisoryLocks -> BigInt {
        class: i32 => Int4,
        keys: Vec<i64> => Array<BigInt>,
        exact: Vec<bool> => Array<Bool>,
        shared: Vec<bool> => Array<Bool>,
    }
    "SELECT CASE WHEN u.exact THEN pg_advisory_xact_lock(u.k) \
                 WHEN u.shared THEN pg_advisory_xact_lock_shared(c.class, u.k::int4) \
                 ELSE pg_advisory_xact_lock(c.class, u.k::int4) END \
     FROM (SELECT ??::int4 AS class) AS c, \
          unnest(??::bigint[], ??::bool[], ??::bool[]) AS u(k, exact, shared)"
}

/// Takes transaction-scoped advisory locks, in the order given (the engine's lock plan).
pub async fn advisory_locks(
    conn: &mut &AsyncPgConnection,
    plan: crate::ledger::engine::LockPlan,
) -> QueryResult<usize> {
    AdvisoryLocks {
        class: plan.class,
        keys: plan.keys,
        exact: plan.exact,
        shared: plan.shared,
    }
    .execute(conn)
    .await
}
