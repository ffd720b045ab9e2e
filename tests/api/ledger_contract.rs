//! The contract of the ledger's face, `flowlet::ledger::Ledger`: what payments, wallets (and
//! cards, later) rely on, written against `Arc<dyn Ledger>` alone. It runs here against the
//! in-process ledger the composition root builds; a ledger moved into its own service would
//! ship a client implementing the same trait, and that client would have to pass this suite
//! unchanged. Each test ends with the books' invariants.

use std::sync::Arc;

use flowlet::kernel::PartnerId;
use flowlet::ledger::{
    Account, AccountFlags, AccountId, Attachment, Ledger, LedgerError, NewAccount, NewTransfer,
    ResultCode, Scope, TransferId,
};
use flowlet::platform::db::{Db, LockKey, LockNamespace};
use flowlet::platform::money::{Currency, Money};
use flowlet::platform::shared_state::SharedState;
use flowlet::platform::workers::Workers;
use flowlet::wiring::Services;

use crate::helpers::{TestApp, spawn_app};

/// A ledger to hold to the contract, and what it runs on.
struct Subject {
    app: TestApp,
    ledger: Arc<dyn Ledger>,
    db: Db,
    workers: Workers,
}

/// The in-process implementation, exactly as `serve` wires it.
async fn in_process() -> Subject {
    let app = spawn_app().await;
    let db = app.pool();
    let mut workers = Workers::new();
    let services = Services::build(
        &app.settings,
        &db,
        &SharedState::in_process(),
        &mut workers,
        None,
    )
    .unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(services.ledger.clone());
    Subject {
        app,
        ledger,
        db,
        workers,
    }
}

impl Subject {
    /// Opens accounts in a transaction of the caller's, as wallets do.
    async fn open(&self, scope: Scope, flags: &[AccountFlags]) -> Vec<AccountId> {
        let accounts: Vec<NewAccount> = flags
            .iter()
            .map(|f| NewAccount {
                id: None,
                currency: usd(),
                code: 7,
                flags: *f,
                metadata: None,
            })
            .collect();
        let ledger = self.ledger.clone();
        let opened: Vec<Account> = self
            .db
            .in_tx(|tx| {
                let (ledger, accounts) = (ledger.clone(), accounts.clone());
                Box::pin(async move { ledger.create_accounts_in(tx, scope, accounts).await })
            })
            .await
            .unwrap();
        opened.iter().map(|a| a.state.id).collect()
    }

    async fn post(&self, scope: Scope, transfer: NewTransfer) -> ResultCode {
        let outcomes = self.ledger.post(scope, vec![transfer], None).await.unwrap();
        assert_eq!(outcomes.len(), 1);
        outcomes[0].code
    }

    async fn balance(&self, scope: Scope, id: AccountId) -> (i64, i64) {
        let t = self.ledger.account(scope, id).await.unwrap().state.totals;
        (t.posted_balance().unwrap(), t.debits_pending)
    }

    async fn finish(self) {
        self.app.assert_ledger_invariants().await;
        self.workers.stop(std::time::Duration::from_secs(5)).await;
    }
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn dollars(cents: i64) -> Money {
    Money::from_minor(cents, usd())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_a_movement_posts_once_and_its_retry_answers_exists() {
    let s = in_process().await;
    let scope = Scope::System;
    let ids = s
        .open(scope, &[AccountFlags::empty(), AccountFlags::empty()])
        .await;
    let id = TransferId::new();
    let t = NewTransfer::movement(id, ids[0], ids[1], dollars(1_000), 1);
    assert_eq!(s.post(scope, t.clone()).await, ResultCode::Ok);
    assert_eq!(s.post(scope, t.clone()).await, ResultCode::Exists);
    let changed = NewTransfer::movement(id, ids[0], ids[1], dollars(999), 1);
    assert_eq!(
        s.post(scope, changed).await,
        ResultCode::ExistsWithDifferentFields
    );
    let stored = s.ledger.transfers(scope, vec![id]).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].amount, 1_000);
    assert_eq!(s.balance(scope, ids[1]).await, (1_000, 0));
    assert_eq!(s.balance(scope, ids[0]).await, (-1_000, 0));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_a_refused_movement_moves_nothing_and_names_its_rule() {
    let s = in_process().await;
    let scope = Scope::System;
    let ids = s
        .open(
            scope,
            &[
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                AccountFlags::empty(),
            ],
        )
        .await;
    let id = TransferId::new();
    let overdraft = NewTransfer::movement(id, ids[0], ids[1], dollars(1), 1);
    assert_eq!(s.post(scope, overdraft).await, ResultCode::ExceedsCredits);
    assert!(
        s.ledger
            .transfers(scope, vec![id])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.balance(scope, ids[0]).await, (0, 0));
    // The failure is decided once: the same id never posts later.
    let funded = NewTransfer::movement(TransferId::new(), ids[1], ids[0], dollars(5), 1);
    assert_eq!(s.post(scope, funded).await, ResultCode::Ok);
    let retry = NewTransfer::movement(id, ids[0], ids[1], dollars(1), 1);
    assert_eq!(s.post(scope, retry).await, ResultCode::IdAlreadyFailed);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_a_hold_is_posted_or_voided_exactly_once() {
    let s = in_process().await;
    let scope = Scope::System;
    let ids = s
        .open(scope, &[AccountFlags::empty(), AccountFlags::empty()])
        .await;
    let (hold, other) = (TransferId::new(), TransferId::new());
    let held = NewTransfer::pending(hold, ids[0], ids[1], dollars(300), 2);
    assert_eq!(s.post(scope, held).await, ResultCode::Ok);
    assert_eq!(s.balance(scope, ids[0]).await, (0, 300));
    let post = NewTransfer::post_pending(TransferId::new(), hold, 2);
    assert_eq!(s.post(scope, post).await, ResultCode::Ok);
    assert_eq!(s.balance(scope, ids[0]).await, (-300, 0));
    let void = NewTransfer::void_pending(TransferId::new(), hold, 2);
    assert_eq!(
        s.post(scope, void).await,
        ResultCode::PendingTransferAlreadyPosted
    );
    let second = NewTransfer::pending(other, ids[0], ids[1], dollars(50), 2);
    assert_eq!(s.post(scope, second).await, ResultCode::Ok);
    let void = NewTransfer::void_pending(TransferId::new(), other, 2);
    assert_eq!(s.post(scope, void).await, ResultCode::Ok);
    assert_eq!(s.balance(scope, ids[0]).await, (-300, 0));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_blocked_flags_refuse_new_debits_until_cleared() {
    let s = in_process().await;
    let scope = Scope::System;
    let ids = s
        .open(scope, &[AccountFlags::empty(), AccountFlags::empty()])
        .await;
    let set = |set: AccountFlags, clear: AccountFlags| {
        let (ledger, account) = (s.ledger.clone(), ids[0]);
        s.db.in_tx(move |tx| {
            let ledger = ledger.clone();
            Box::pin(async move {
                ledger
                    .set_account_flags_in(tx, scope, account, set, clear)
                    .await
            })
        })
    };
    let frozen = set(AccountFlags::DEBITS_BLOCKED, AccountFlags::empty())
        .await
        .unwrap();
    assert!(frozen.state.flags.contains(AccountFlags::DEBITS_BLOCKED));
    let t = || NewTransfer::movement(TransferId::new(), ids[0], ids[1], dollars(1), 1);
    assert_eq!(s.post(scope, t()).await, ResultCode::DebitsBlocked);
    set(AccountFlags::empty(), AccountFlags::DEBITS_BLOCKED)
        .await
        .unwrap();
    assert_eq!(s.post(scope, t()).await, ResultCode::Ok);
    // Only the blocking flags change through this door; closed is never cleared.
    let refused = set(AccountFlags::HISTORY, AccountFlags::empty()).await;
    assert!(
        matches!(refused, Err(LedgerError::Validation { .. })),
        "{refused:?}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_a_partner_scope_sees_and_moves_only_its_own_books() {
    let s = in_process().await;
    let (mine, theirs) = (PartnerId::new(), PartnerId::new());
    let my_ids = s
        .open(
            Scope::Partner(mine),
            &[AccountFlags::empty(), AccountFlags::empty()],
        )
        .await;
    let their_ids = s
        .open(Scope::Partner(theirs), &[AccountFlags::empty()])
        .await;
    assert!(matches!(
        s.ledger.account(Scope::Partner(mine), their_ids[0]).await,
        Err(LedgerError::AccountNotFound)
    ));
    assert!(s.ledger.account(Scope::System, their_ids[0]).await.is_ok());
    let across = NewTransfer::movement(TransferId::new(), my_ids[0], their_ids[0], dollars(1), 1);
    let code = s.post(Scope::Partner(mine), across).await;
    assert!(
        matches!(
            code,
            ResultCode::AccountNotFound | ResultCode::AccountNotOwned
        ),
        "{code:?}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_the_journal_reads_newest_first_and_balances_read_as_of_a_time() {
    let s = in_process().await;
    let scope = Scope::System;
    let ids = s
        .open(scope, &[AccountFlags::empty(), AccountFlags::HISTORY])
        .await;
    for cents in [100, 200, 300] {
        let t = NewTransfer::movement(TransferId::new(), ids[0], ids[1], dollars(cents), 1);
        assert_eq!(s.post(scope, t).await, ResultCode::Ok);
    }
    let page = s.ledger.entries(scope, ids[1], None, 2).await.unwrap();
    assert_eq!(page.data.len(), 2);
    assert!(page.data[0].seq > page.data[1].seq);
    assert_eq!(page.data[0].posted_delta, 300);
    assert!(page.next_cursor.is_some());
    let before = page.data[1].seq;
    let rest = s
        .ledger
        .entries(scope, ids[1], Some(before), 10)
        .await
        .unwrap();
    assert_eq!(rest.data.len(), 1);
    assert_eq!(rest.data[0].posted_delta, 100);
    let (_, now) = s
        .ledger
        .balance_at(scope, ids[1], chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(now.posted_balance(), Some(600));
    let (_, then) = s
        .ledger
        .balance_at(scope, ids[1], rest.data[0].created_at)
        .await
        .unwrap();
    assert_eq!(then.posted_balance(), Some(100));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_an_attached_write_commits_with_the_transfer_or_not_at_all() {
    let s = in_process().await;
    let scope = Scope::System;
    let ids = s
        .open(scope, &[AccountFlags::empty(), AccountFlags::empty()])
        .await;
    let key = LockKey::new(
        LockNamespace::new("contract", 0x636f_6e74),
        uuid::Uuid::now_v7(),
    );
    let marker = format!("contract_{}", uuid::Uuid::now_v7().simple());
    let write = |fail: bool| {
        let marker = marker.clone();
        Attachment::Each(Box::new(move |tx, outcomes| {
            let (marker, ok) = (marker.clone(), outcomes[0].code == ResultCode::Ok);
            Box::pin(async move {
                use diesel_async::SimpleAsyncConnection;
                assert!(ok, "the attached write sees the transfer's outcome");
                tx.conn()
                    .batch_execute(&format!("SELECT set_config('flowlet.{marker}', 'x', true)"))
                    .await
                    .map_err(|e| flowlet::ledger::SideWriteError(Box::new(e)))?;
                if fail {
                    return Err(flowlet::ledger::SideWriteError(
                        "refused by the caller".into(),
                    ));
                }
                Ok(())
            })
        }))
    };
    let refused = TransferId::new();
    let t = NewTransfer::movement(refused, ids[0], ids[1], dollars(5), 1);
    let answer = s
        .ledger
        .post_attached(scope, vec![t], vec![key], write(true))
        .await;
    assert!(answer.is_err(), "{answer:?}");
    assert!(
        s.ledger
            .transfers(scope, vec![refused])
            .await
            .unwrap()
            .is_empty()
    );
    let kept = TransferId::new();
    let t = NewTransfer::movement(kept, ids[0], ids[1], dollars(5), 1);
    let outcomes = s
        .ledger
        .post_attached(scope, vec![t], vec![key], write(false))
        .await
        .unwrap();
    assert_eq!(outcomes[0].code, ResultCode::Ok);
    assert_eq!(
        s.ledger.transfers(scope, vec![kept]).await.unwrap().len(),
        1
    );
    s.finish().await;
}
