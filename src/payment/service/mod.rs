//! The payment service: P2P payments between wallets and deposits into them. Each payment is
//! one ledger transfer posted through the engine with the payment row, the tier limits and the
//! event attached, so they commit together or not at all.
//!
//! This file holds the service itself (its state, its collaborators, its constructor), the
//! `Payment` answer and its metrics, and what the operations share: input checks, the payment
//! row, and the posting of a payment's transfer with its attached write. Each operation has
//! its own file: `p2p`, `deposit`, `withdrawal` (with its settlement) and `refund`; `writer`
//! writes what is attached to the postings; `reads` reads payments back and verifies them
//! against the ledger.

mod deposit;
mod p2p;
mod reads;
mod refund;
mod withdrawal;
mod writer;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::error::PaymentError;
use super::model::{self, PaymentId, PaymentKind, PaymentStatus, Refusal};
use super::rail::Rail;
use super::store::{self, PaymentRow};
use crate::kernel::PartnerId;
use crate::kyc::{Compliance, Movement, limit_lock_key};
use crate::ledger::{
    AccountFlags, AccountId, Attachment, BatchWrite, Ledger, NewAccount, NewTransfer, Outcome,
    ResultCode, Scope, TransferId,
};
use crate::notify::Outbox;
use crate::platform::db::{Db, LockKey, LockNamespace};
use crate::platform::idempotency::Claim;
use crate::platform::money::{Amount, Currency, Money};
use crate::wallet::{FreezeMode, WalletId, WalletRef, WalletStatus, Wallets};
use writer::PaymentWriter;

pub use deposit::NewDeposit;
pub use p2p::NewPayment;
pub use refund::NewRefund;
pub use withdrawal::NewWithdrawal;

/// Ledger account code of the platform's rail clearing accounts.
pub const RAIL_ACCOUNT_CODE: i32 = 900;

/// The payment routes whose `Idempotency-Key` is claimed by their posting's own transaction
/// (everything a payment does happens in it; see `IdempotencyContext::claiming_in_transaction`).
pub const CLAIMING_IN_TRANSACTION: &[&str] = &[
    "/v1/payments",
    "/v1/payments/{id}/refunds",
    "/v1/deposits",
    "/v1/withdrawals",
];

/// A payment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Payment {
    #[schema(value_type = String, example = "pay_01h455vb4pex5vsknk084sn02q")]
    pub id: PaymentId,
    #[serde(rename = "type")]
    pub kind: PaymentKind,
    pub status: PaymentStatus,
    pub from_wallet_id: Option<String>,
    pub to_wallet_id: Option<String>,
    pub amount: String,
    pub currency: String,
    pub description: Option<String>,
    /// The ledger transfer that moved the money.
    #[schema(value_type = String)]
    pub transfer_id: TransferId,
    /// Rail details (a deposit's source, a withdrawal's destination).
    #[schema(value_type = Object)]
    pub rail: Option<serde_json::Value>,
    /// For a refund: the payment it returns money of.
    pub refund_of: Option<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// `payments_total{type,status}` and `payment_amount_minor_total{currency,type}`.
#[derive(Clone)]
pub struct PaymentMetrics {
    payments: IntCounterVec,
    amounts: IntCounterVec,
}

impl PaymentMetrics {
    pub fn new(registry: &Registry) -> Result<PaymentMetrics, prometheus::Error> {
        let payments = IntCounterVec::new(
            Opts::new("payments_total", "Payments answered, by type and status."),
            &["type", "status"],
        )?;
        let amounts = IntCounterVec::new(
            Opts::new(
                "payment_amount_minor_total",
                "Money moved by completed payments, in minor units.",
            ),
            &["currency", "type"],
        )?;
        registry.register(Box::new(payments.clone()))?;
        registry.register(Box::new(amounts.clone()))?;
        Ok(PaymentMetrics { payments, amounts })
    }

    fn observe(&self, kind: PaymentKind, status: &str, amount: Option<Money>) {
        self.payments
            .with_label_values(&[kind.as_str(), status])
            .inc();
        if let Some(m) = amount {
            self.amounts
                .with_label_values(&[m.currency().code(), kind.as_str()])
                .inc_by(u64::try_from(m.minor()).unwrap_or(0));
        }
    }
}

struct Inner {
    db: Db,
    ledger: Arc<dyn Ledger>,
    wallets: Arc<dyn Wallets>,
    kyc: Arc<dyn Compliance>,
    outbox: Arc<dyn Outbox>,
    metrics: Option<PaymentMetrics>,
    rail: Arc<dyn Rail>,
    settlement_batch: i64,
    /// Writes the payments of each ledger batch together.
    writer: Arc<dyn BatchWrite>,
}

/// The other modules' faces payments work through (built by the composition root).
pub struct Collaborators {
    pub ledger: Arc<dyn Ledger>,
    pub wallets: Arc<dyn Wallets>,
    pub kyc: Arc<dyn Compliance>,
    pub outbox: Arc<dyn Outbox>,
}

/// Payments. Cheap to clone.
#[derive(Clone)]
pub struct PaymentService {
    inner: Arc<Inner>,
}

fn now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

fn wallet_id(field: &'static str, raw: &str) -> Result<WalletId, PaymentError> {
    raw.trim()
        .parse()
        .map_err(|_| PaymentError::validation(field, "is not a wallet id (wal_...)"))
}

/// Account details for the rail, kept as given: a JSON object of at most 2 KiB.
fn rail_details(field: &'static str, value: &serde_json::Value) -> Result<(), PaymentError> {
    if value.is_object() && value.to_string().len() <= 2048 {
        Ok(())
    } else {
        Err(PaymentError::validation(
            field,
            "must be a JSON object of at most 2 KiB",
        ))
    }
}

fn money(amount: &Amount, currency: Currency) -> Result<Money, PaymentError> {
    Money::parse_positive(amount, currency)
        .map_err(|e| PaymentError::validation("amount", e.to_string()))
}

/// A payment row with what every payment has; the caller fills in the rest.
fn new_row(
    id: PaymentId,
    partner: PartnerId,
    kind: PaymentKind,
    status: PaymentStatus,
    amount: Money,
    at: DateTime<Utc>,
) -> PaymentRow {
    PaymentRow {
        id: id.uuid(),
        partner_id: partner.uuid(),
        kind: kind.as_str().into(),
        status: status.as_str().into(),
        from_wallet_id: None,
        to_wallet_id: None,
        amount: amount.minor(),
        currency: amount.currency().code().into(),
        description: None,
        transfer_id: id.uuid(),
        rail: None,
        created_at: at,
        updated_at: at,
        settlement_transfer_id: None,
        settle_after: None,
        refund_of: None,
    }
}

fn view(row: &PaymentRow) -> Result<Payment, PaymentError> {
    let currency = Currency::parse(&row.currency)
        .map_err(|e| PaymentError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
    Ok(Payment {
        id: PaymentId::from_uuid(row.id),
        kind: PaymentKind::parse(&row.kind)
            .ok_or_else(|| anyhow::anyhow!("stored payment kind {:?}", row.kind))?,
        status: PaymentStatus::parse(&row.status)
            .ok_or_else(|| anyhow::anyhow!("stored payment status {:?}", row.status))?,
        from_wallet_id: row
            .from_wallet_id
            .map(|w| WalletId::from_uuid(w).to_string()),
        to_wallet_id: row.to_wallet_id.map(|w| WalletId::from_uuid(w).to_string()),
        amount: Money::from_minor(row.amount, currency).format_amount(),
        currency: row.currency.clone(),
        description: row.description.clone(),
        transfer_id: TransferId::from_uuid(row.transfer_id),
        rail: row.rail.clone(),
        refund_of: row.refund_of.map(|p| PaymentId::from_uuid(p).to_string()),
        created: row.created_at,
        updated: row.updated_at,
    })
}

/// A wallet that may send (`debit`) or receive money, judged from its state before posting;
/// the ledger's flags decide exactly at commit time.
fn check_open(wallet: &WalletRef, debit: bool) -> Result<(), PaymentError> {
    match (wallet.status, wallet.freeze_mode) {
        (WalletStatus::Closed, _) => Err(PaymentError::WalletClosed),
        (WalletStatus::Frozen, Some(FreezeMode::All)) => Err(PaymentError::WalletFrozen),
        (WalletStatus::Frozen, Some(FreezeMode::Debits)) if debit => {
            Err(PaymentError::WalletFrozen)
        }
        (WalletStatus::Frozen, Some(FreezeMode::Credits)) if !debit => {
            Err(PaymentError::WalletFrozen)
        }
        _ => Ok(()),
    }
}

/// The advisory lock key guarding a payment's row against concurrent refunds (taken by the
/// engine before attached writes, in order with the customers' keys).
fn payment_lock_key(payment: uuid::Uuid) -> LockKey {
    LockKey::new(REFUNDS, payment)
}

/// A payment being refunded (the tag is the one earlier releases used).
const REFUNDS: LockNamespace = LockNamespace::new("payment.refunds", 0x7061_795f_7265_666e);
/// A currency's rail account being created.
const RAIL_ACCOUNTS: LockNamespace =
    LockNamespace::new("payment.rail_accounts", 0x7061_795f_7261_696c);

/// What a payment's attached write needs.
struct Attached {
    partner: PartnerId,
    row: PaymentRow,
    /// The paying customer's movement, checked against their tier.
    outgoing: Option<Movement>,
    /// The receiving wallet's customer and account (balance cap of their tier).
    incoming: Option<(crate::kyc::CustomerId, AccountId)>,
    amount: Money,
    event: &'static str,
    /// For a refund: the original payment and its amount (never refunded beyond it).
    refund_of: Option<(uuid::Uuid, i64)>,
    /// The request's idempotency claim: the answer is stored in the posting's transaction.
    claim: Option<Claim>,
}

impl PaymentService {
    pub fn new(
        db: Db,
        collaborators: Collaborators,
        metrics: Option<PaymentMetrics>,
        rail: Arc<dyn Rail>,
        settlement_batch: i64,
    ) -> PaymentService {
        let Collaborators {
            ledger,
            wallets,
            kyc,
            outbox,
        } = collaborators;
        PaymentService {
            inner: Arc::new(Inner {
                db,
                ledger,
                wallets,
                writer: Arc::new(PaymentWriter {
                    kyc: kyc.clone(),
                    outbox: outbox.clone(),
                }),
                kyc,
                outbox,
                metrics,
                rail,
                settlement_batch,
            }),
        }
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Posts a payment's transfer with its row, limits and event attached.
    async fn post(
        &self,
        scope: Scope,
        transfer: NewTransfer,
        attached: Attached,
    ) -> Result<Payment, PaymentError> {
        let kind = PaymentKind::parse(&attached.row.kind).unwrap_or(PaymentKind::P2p);
        // Only outgoing money updates a customer's limit counters (incoming checks the cap).
        let mut locks: Vec<LockKey> = attached
            .outgoing
            .iter()
            .map(|m| limit_lock_key(m.customer_id))
            .collect();
        if let Some((original, _)) = attached.refund_of {
            locks.push(payment_lock_key(original));
        }
        let amount = attached.amount;
        let row = attached.row.clone();
        let side = Attachment::Batched(self.inner.writer.clone(), Box::new(attached));
        let result = self
            .inner
            .ledger
            .post_attached(scope, vec![transfer], locks, side)
            .await
            .map_err(PaymentError::from)
            .and_then(|outcomes| {
                let code = outcomes
                    .first()
                    .map_or(ResultCode::Ok, |o: &Outcome| o.code);
                match code {
                    ResultCode::Ok => view(&row),
                    other => Err(match model::refusal(other) {
                        Refusal::InsufficientFunds => PaymentError::InsufficientFunds,
                        Refusal::WalletFrozen => PaymentError::WalletFrozen,
                        Refusal::WalletClosed => PaymentError::WalletClosed,
                        Refusal::CurrencyMismatch => PaymentError::CurrencyMismatch,
                        Refusal::Other(code) => PaymentError::Refused(code),
                    }),
                }
            });
        if let Some(m) = &self.inner.metrics {
            match &result {
                Ok(p) => m.observe(kind, p.status.as_str(), Some(amount)),
                Err(e) => m.observe(kind, refused_label(e), None),
            }
        }
        result
    }

    /// The platform's clearing account on the rail for `currency`, made on first use.
    async fn rail_account(&self, currency: Currency) -> Result<AccountId, PaymentError> {
        let code = currency.code();
        {
            let mut conn = self.db().conn().await?;
            if let Some(id) = store::rail_account(&mut conn, code).await? {
                return Ok(AccountId::from_uuid(id));
            }
        }
        let ledger = self.inner.ledger.clone();
        self.db()
            .in_tx(|tx| {
                let ledger = ledger.clone();
                Box::pin(async move {
                    // One creator per currency at a time, across replicas.
                    tx.advisory_lock(LockKey::named(RAIL_ACCOUNTS, code))
                        .await?;
                    if let Some(id) = store::rail_account(tx.conn(), code).await? {
                        return Ok(AccountId::from_uuid(id));
                    }
                    let id = AccountId::new();
                    ledger
                        .create_accounts_in(
                            tx,
                            Scope::System,
                            vec![NewAccount {
                                id: Some(id),
                                currency,
                                code: RAIL_ACCOUNT_CODE,
                                flags: AccountFlags::HISTORY,
                                metadata: Some(json!({ "rail": "sandbox" })),
                            }],
                        )
                        .await?;
                    store::insert_rail_account(tx.conn(), code, id.uuid()).await?;
                    Ok::<_, PaymentError>(id)
                })
            })
            .await
    }
}

fn refused_label(e: &PaymentError) -> &'static str {
    use crate::platform::error::Problem;
    e.code()
}
