//! The transaction helper and migrations, against real PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use diesel::sql_types::BigInt;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use flowlet::platform::db::{Db, DbError, PoolOptions, Retryable, run_migrations};
use flowlet::platform::error::Problem;

use crate::helpers::{empty_database, test_database};

fn pool(url: &str, retries: u32) -> Db {
    Db::connect(
        url,
        &PoolOptions {
            max_size: 4,
            wait_timeout: std::time::Duration::from_secs(5),
            connect_timeout: std::time::Duration::from_secs(5),
            tx_max_retries: retries,
            ca_file: None,
        },
    )
    .unwrap()
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(db: &Db, sql: &str) -> i64 {
    let mut conn = db.conn().await.unwrap();
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

#[tokio::test]
async fn a_transaction_commits_on_ok_and_rolls_back_on_err() {
    let database = test_database().await;
    let db = pool(&database.url, 0);
    db.conn()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();

    db.in_tx(|tx| {
        Box::pin(async move {
            tx.conn().batch_execute("INSERT INTO t VALUES (1)").await?;
            Ok::<_, DbError>(())
        })
    })
    .await
    .unwrap();

    let failed = db
        .in_tx(|tx| {
            Box::pin(async move {
                tx.conn().batch_execute("INSERT INTO t VALUES (2)").await?;
                Err::<(), _>(DbError::Unavailable("rule refused".into()))
            })
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(count(&db, "SELECT count(*) AS n FROM t").await, 1);
}

#[tokio::test]
async fn a_serialization_failure_is_retried_a_bounded_number_of_times() {
    let database = test_database().await;
    let db = pool(&database.url, 3);
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    let result = db
        .in_tx(move |tx| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.fetch_add(1, Ordering::SeqCst);
                tx.conn()
                    .batch_execute(
                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
                    )
                    .await?;
                Ok::<_, DbError>(())
            })
        })
        .await;
    let err = result.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.code(), "internal_error");
    assert_eq!(
        AtomicU32::load(&attempts, Ordering::SeqCst),
        4,
        "one try and three retries"
    );
}

#[tokio::test]
async fn a_deadlock_is_retried_and_both_transactions_commit() {
    let database = test_database().await;
    let db = pool(&database.url, 5);
    db.conn()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE acct (id int PRIMARY KEY, n int NOT NULL); INSERT INTO acct VALUES (1, 0), (2, 0)")
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));

    let run = |first: i32, second: i32| {
        let db = db.clone();
        let barrier = barrier.clone();
        let attempts = attempts.clone();
        async move {
            db.in_tx(move |tx| {
                let barrier = barrier.clone();
                let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    tx.conn()
                        .batch_execute(&format!("UPDATE acct SET n = n + 1 WHERE id = {first}"))
                        .await?;
                    // Only the first attempts meet at the barrier, so they lock in opposite
                    // orders at the same time; a retry runs alone.
                    if attempt < 2 {
                        barrier.wait().await;
                    }
                    tx.conn()
                        .batch_execute(&format!("UPDATE acct SET n = n + 1 WHERE id = {second}"))
                        .await?;
                    Ok::<_, DbError>(())
                })
            })
            .await
        }
    };
    let (a, b) = tokio::join!(run(1, 2), run(2, 1));
    a.unwrap();
    b.unwrap();
    assert!(
        AtomicU32::load(&attempts, Ordering::SeqCst) >= 3,
        "one of them was retried"
    );
    assert_eq!(count(&db, "SELECT sum(n)::bigint AS n FROM acct").await, 4);
}

#[tokio::test]
async fn migrations_started_together_are_applied_exactly_once() {
    let database = empty_database().await;
    let runs = (0..4).map(|_| run_migrations(&database.url));
    let results = futures_util::future::join_all(runs).await;
    let applied: Vec<Vec<String>> = results.into_iter().map(Result::unwrap).collect();
    let total: usize = applied.iter().map(Vec::len).sum();
    let db = pool(&database.url, 0);
    let rows = count(&db, "SELECT count(*) AS n FROM __diesel_schema_migrations").await;
    assert!(rows > 0);
    assert_eq!(
        total,
        usize::try_from(rows).unwrap(),
        "each migration applied by exactly one runner"
    );
    assert_eq!(applied.iter().filter(|a| !a.is_empty()).count(), 1);
    assert!(run_migrations(&database.url).await.unwrap().is_empty());
    db.close();
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_database_unavailable() {
    let db = pool("postgres://postgres@127.0.0.1:1/none", 0);
    let err = db.conn().await.err().unwrap();
    assert_eq!(err.status().as_u16(), 503);
    assert_eq!(err.code(), "database_unavailable");
}

#[tokio::test]
async fn a_migration_lock_held_elsewhere_is_waited_for_only_as_long_as_configured() {
    use flowlet::platform::db::{
        LockKey, MigrationLimits, PgConnector, namespaces, run_migrations_with,
    };
    let database = empty_database().await;
    // Another migrator holds the lock (and keeps it).
    let holder = pool(&database.url, 0);
    let mut conn = holder.conn().await.unwrap();
    conn.batch_execute(&format!(
        "SELECT pg_advisory_lock({})",
        LockKey::singleton(namespaces::MIGRATIONS).value()
    ))
    .await
    .unwrap();
    let limits = MigrationLimits {
        lock_wait: std::time::Duration::from_millis(300),
        ..MigrationLimits::default()
    };
    let connector = PgConnector::new(&database.url, None).unwrap();
    let err = run_migrations_with(&connector, limits).await.unwrap_err();
    assert!(format!("{err:#}").contains("migration lock"), "{err:#}");
    // Nothing was applied behind the holder's back; once it lets go, migrating works.
    drop(conn);
    holder.close();
    let applied = run_migrations_with(&connector, limits).await.unwrap();
    assert!(!applied.is_empty());
}
