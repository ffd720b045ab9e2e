//! The payment service: P2P payments between wallets and deposits into them. Each payment is
//! one ledger transfer posted through the engine with the payment row, the tier limits and the
//! event attached, so they commit together or not at all.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::PaymentError;
use super::model::{self, PaymentId, PaymentKind, PaymentStatus, Refusal};
use super::rail::{Rail, Settlement};
use super::store::{self, PaymentRow};
use crate::kernel::{PartnerId, Principal};
use crate::kyc::{Compliance, Direction, Movement, OutgoingKind, limit_lock_key};
use crate::ledger::{
    AccountFlags, AccountId, AttachedItem, Attachment, BatchWrite, Ledger, NewAccount, NewTransfer,
    Outcome, ResultCode, Scope, SideWrite, SideWriteError, TransferId,
};
use crate::notify::{NewEvent, Outbox};
use crate::platform::db::{Db, LockKey, LockNamespace, Tx, TxFuture};
use crate::platform::http::pagination::Page;
use crate::platform::idempotency::{Claim, is_claim_lost};
use crate::platform::money::{Amount, Currency, Money};
use crate::platform::workers::Shutdown;
use crate::wallet::{FreezeMode, WalletId, WalletRef, WalletStatus, Wallets};

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

/// `POST /v1/payments`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    pub from_wallet_id: String,
    pub to_wallet_id: String,
    /// A decimal string (or exact JSON number) with at most the currency's minor digits.
    #[schema(value_type = String, example = "25.00")]
    pub amount: Amount,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub description: Option<String>,
}

/// `POST /v1/deposits`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeposit {
    pub wallet_id: String,
    #[schema(value_type = String, example = "100.00")]
    pub amount: Amount,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Where the money comes from (free-form details of the paying account), kept as given.
    #[schema(value_type = Object)]
    pub source: Option<serde_json::Value>,
}

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

/// An attached write's error: database errors travel as themselves, so the engine can tell a
/// conflict (which it retries) from a refusal.
fn side_error(e: impl Into<PaymentError>) -> SideWriteError {
    match e.into() {
        PaymentError::Db(db) => SideWriteError(Box::new(db)),
        other => SideWriteError(Box::new(other)),
    }
}

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

/// `POST /v1/withdrawals`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWithdrawal {
    pub wallet_id: String,
    #[schema(value_type = String, example = "40.00")]
    pub amount: Amount,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Where the money goes (the receiving account's details), kept as given.
    #[schema(value_type = Object)]
    pub destination: serde_json::Value,
}

/// `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    /// Default: everything not refunded yet.
    #[schema(value_type = Option<String>, example = "5.00")]
    pub amount: Option<Amount>,
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

    /// A P2P payment between two wallets of the partner.
    pub async fn pay(
        &self,
        partner: PartnerId,
        input: NewPayment,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let from_id = wallet_id("from_wallet_id", &input.from_wallet_id)?;
        let to_id = wallet_id("to_wallet_id", &input.to_wallet_id)?;
        if from_id == to_id {
            return Err(PaymentError::validation(
                "to_wallet_id",
                "must be another wallet than from_wallet_id",
            ));
        }
        let amount = money(&input.amount, input.currency)?;
        let description = model::description(input.description.as_deref())
            .map_err(|m| PaymentError::validation("description", m))?;
        let wallets = &self.inner.wallets;
        // The wallets' immutable facts (from memory once read); whether they are frozen or
        // closed is the ledger's to say when the transfer posts (debits_blocked,
        // credits_blocked, account_closed), exactly at commit time.
        let (from, to) = wallets.wallet_accounts(partner, from_id, to_id).await?;
        if from.currency != input.currency || to.currency != input.currency {
            return Err(PaymentError::CurrencyMismatch);
        }
        let id = PaymentId::new();
        let at = now();
        let row = PaymentRow {
            from_wallet_id: Some(from.id.uuid()),
            to_wallet_id: Some(to.id.uuid()),
            description: description.clone(),
            ..new_row(
                id,
                partner,
                PaymentKind::P2p,
                PaymentStatus::Completed,
                amount,
                at,
            )
        };
        let transfer = NewTransfer::movement(
            TransferId::from_uuid(id.uuid()),
            from.account_id,
            to.account_id,
            amount,
            PaymentKind::P2p.transfer_code(),
        )
        .with_metadata(json!({
            "payment_id": id,
            "type": "p2p",
            "description": description,
        }));
        // The payment module moves the money, on accounts it checked are the partner's
        // wallets: the system's scope (a partner's own scope may not touch wallet accounts).
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row,
                outgoing: Some(Movement {
                    customer_id: from.customer_id,
                    amount,
                    direction: Direction::Outgoing(OutgoingKind::Payment),
                    balance_after: None,
                }),
                incoming: Some((to.customer_id, to.account_id)),
                amount,
                event: "payment.completed",
                refund_of: None,
                claim,
            },
        )
        .await
    }

    /// A deposit from outside (the sandbox rail settles it at once).
    pub async fn deposit(
        &self,
        partner: PartnerId,
        input: NewDeposit,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let to_id = wallet_id("wallet_id", &input.wallet_id)?;
        let amount = money(&input.amount, input.currency)?;
        if let Some(source) = &input.source {
            rail_details("source", source)?;
        }
        let to = self.inner.wallets.wallet_ref(partner, to_id).await?;
        if to.currency != input.currency {
            return Err(PaymentError::CurrencyMismatch);
        }
        check_open(&to, false)?;
        let rail = self.rail_account(input.currency).await?;
        let id = PaymentId::new();
        let at = now();
        let row = PaymentRow {
            to_wallet_id: Some(to.id.uuid()),
            rail: input
                .source
                .map(|s| json!({ "rail": "sandbox", "source": s })),
            ..new_row(
                id,
                partner,
                PaymentKind::Deposit,
                PaymentStatus::Completed,
                amount,
                at,
            )
        };
        let transfer = NewTransfer::movement(
            TransferId::from_uuid(id.uuid()),
            rail,
            to.account_id,
            amount,
            PaymentKind::Deposit.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": id, "type": "deposit" }));
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row,
                outgoing: None,
                incoming: Some((to.customer_id, to.account_id)),
                amount,
                event: "payment.completed",
                refund_of: None,
                claim,
            },
        )
        .await
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

    /// A withdrawal to the outside rail: the money is held at once (a pending ledger transfer,
    /// status `pending`) and posted or released when the rail settles.
    pub async fn withdraw(
        &self,
        partner: PartnerId,
        input: NewWithdrawal,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let from_id = wallet_id("wallet_id", &input.wallet_id)?;
        let amount = money(&input.amount, input.currency)?;
        rail_details("destination", &input.destination)?;
        let from = self.inner.wallets.wallet_ref(partner, from_id).await?;
        if from.currency != input.currency {
            return Err(PaymentError::CurrencyMismatch);
        }
        check_open(&from, true)?;
        let rail_account = self.rail_account(input.currency).await?;
        let rail = &self.inner.rail;
        let id = PaymentId::new();
        let at = now();
        let row = PaymentRow {
            from_wallet_id: Some(from.id.uuid()),
            rail: Some(json!({ "rail": rail.name(), "destination": input.destination })),
            settlement_transfer_id: Some(TransferId::new().uuid()),
            settle_after: Some(rail.settle_after(at)),
            ..new_row(
                id,
                partner,
                PaymentKind::Withdrawal,
                PaymentStatus::Pending,
                amount,
                at,
            )
        };
        let transfer = NewTransfer::pending(
            TransferId::from_uuid(id.uuid()),
            from.account_id,
            rail_account,
            amount,
            PaymentKind::Withdrawal.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": id, "type": "withdrawal" }));
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row,
                outgoing: Some(Movement {
                    customer_id: from.customer_id,
                    amount,
                    direction: Direction::Outgoing(OutgoingKind::Withdrawal),
                    balance_after: None,
                }),
                incoming: None,
                amount,
                event: "payment.created",
                refund_of: None,
                claim,
            },
        )
        .await
    }

    /// Refunds (part of) a completed P2P payment: a new transfer back from the payee, never
    /// more in total than was paid; the original becomes `reversed` once fully refunded.
    pub async fn refund(
        &self,
        partner: PartnerId,
        original: PaymentId,
        input: NewRefund,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let row = {
            let mut conn = self.db().conn().await?;
            store::find_payment(&mut conn, original.uuid())
                .await?
                .filter(|r| r.partner_id == partner.uuid())
                .ok_or(PaymentError::NotFound("payment"))?
        };
        let (Some(payer), Some(payee)) = (row.from_wallet_id, row.to_wallet_id) else {
            return Err(PaymentError::NotRefundable(
                "only payments between wallets are refunded",
            ));
        };
        if row.kind != PaymentKind::P2p.as_str() {
            return Err(PaymentError::NotRefundable(
                "only payments between wallets are refunded",
            ));
        }
        let currency = Currency::parse(&row.currency)
            .map_err(|e| PaymentError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
        let nothing_left = || PaymentError::RefundExceedsPayment {
            remaining: Money::zero(currency).format_amount(),
        };
        if row.status == PaymentStatus::Reversed.as_str() {
            return Err(nothing_left());
        }
        if row.status != PaymentStatus::Completed.as_str() {
            return Err(PaymentError::NotRefundable(
                "only completed payments are refunded",
            ));
        }
        let amount = match &input.amount {
            Some(a) => money(a, currency)?,
            None => {
                let mut conn = self.db().conn().await?;
                let done = store::refunded(&mut conn, row.id).await?;
                let rest = row.amount.saturating_sub(done);
                if rest <= 0 {
                    return Err(nothing_left());
                }
                Money::from_minor(rest, currency)
            }
        };
        let wallets = &self.inner.wallets;
        let (from, to) = wallets
            .wallet_pair(
                partner,
                WalletId::from_uuid(payee),
                WalletId::from_uuid(payer),
            )
            .await?;
        check_open(&from, true)?;
        check_open(&to, false)?;
        let id = PaymentId::new();
        let at = now();
        let refund = PaymentRow {
            from_wallet_id: Some(payee),
            to_wallet_id: Some(payer),
            refund_of: Some(row.id),
            ..new_row(
                id,
                partner,
                PaymentKind::Refund,
                PaymentStatus::Completed,
                amount,
                at,
            )
        };
        let transfer = NewTransfer::movement(
            TransferId::from_uuid(id.uuid()),
            from.account_id,
            to.account_id,
            amount,
            PaymentKind::Refund.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": id, "type": "refund", "refund_of": original }));
        // The payment module moves the money, on accounts it checked are the partner's
        // wallets: the system's scope (a partner's own scope may not touch wallet accounts).
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row: refund,
                outgoing: None,
                incoming: None,
                amount,
                event: "payment.refunded",
                refund_of: Some((row.id, row.amount)),
                claim,
            },
        )
        .await
    }

    /// Asks the rail about every pending withdrawal that is due and posts (settled) or voids
    /// (failed) its held money, with the payment's new status, the tier usage given back on a
    /// failure, and the event, in one transaction. Settling twice (another replica, a restart)
    /// is harmless: the settlement transfer id was chosen when the withdrawal was made.
    pub async fn settle_due(&self) -> Result<usize, PaymentError> {
        let at = now();
        let due = {
            let mut conn = self.db().conn().await?;
            store::due_withdrawals(&mut conn, at, self.settlement_batch()).await?
        };
        let mut settled = 0;
        for row in due {
            // One bad row (a record that no longer adds up) is logged and skipped: it must
            // never hold back the settlement of every withdrawal after it.
            match self.settle(&row, at).await {
                Ok(true) => settled += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(
                    payment.id = %PaymentId::from_uuid(row.id),
                    error.cause = %e,
                    "settling a withdrawal failed; going on with the next"
                ),
            }
        }
        Ok(settled)
    }

    /// Settles one due withdrawal if the rail has decided it; whether it settled now.
    async fn settle(&self, row: &PaymentRow, at: DateTime<Utc>) -> Result<bool, PaymentError> {
        let Some(settlement_id) = row.settlement_transfer_id else {
            return Ok(false);
        };
        let currency = Currency::parse(&row.currency)
            .map_err(|e| PaymentError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
        let amount = Money::from_minor(row.amount, currency);
        let verdict = self
            .inner
            .rail
            .settlement(amount, row.settle_after.unwrap_or(row.created_at), at)
            .await
            .map_err(|e| PaymentError::Internal(e.into()))?;
        let (resolve, status): (fn(TransferId, TransferId, i32) -> NewTransfer, _) = match verdict {
            Settlement::Pending => return Ok(false),
            Settlement::Succeeded => (NewTransfer::post_pending, PaymentStatus::Completed),
            Settlement::Failed(_) => (NewTransfer::void_pending, PaymentStatus::Failed),
        };
        let customer = match row.from_wallet_id {
            Some(w) => Some(
                self.inner
                    .wallets
                    .wallet_ref(PartnerId::from_uuid(row.partner_id), WalletId::from_uuid(w))
                    .await?
                    .customer_id,
            ),
            None => None,
        };
        let transfer = resolve(
            TransferId::from_uuid(settlement_id),
            TransferId::from_uuid(row.transfer_id),
            PaymentKind::Withdrawal.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": PaymentId::from_uuid(row.id), "type": "withdrawal" }));
        let (kyc, outbox) = (self.inner.kyc.clone(), self.inner.outbox.clone());
        let side_row = row.clone();
        let side: SideWrite = Box::new(move |tx, outcomes| {
            let (kyc, outbox, row) = (kyc.clone(), outbox.clone(), side_row.clone());
            Box::pin(async move {
                let faces = (&*kyc, &*outbox);
                finish_withdrawal(tx, faces, &row, customer, amount, status, outcomes).await
            })
        });
        let locks = customer.map(limit_lock_key).into_iter().collect();
        let outcomes = self
            .inner
            .ledger
            .post_attached(Scope::System, vec![transfer], locks, Attachment::Each(side))
            .await?;
        if !outcomes.first().is_some_and(|o| o.code == ResultCode::Ok) {
            return Ok(false);
        }
        if let Some(m) = &self.inner.metrics {
            m.observe(
                PaymentKind::Withdrawal,
                status.as_str(),
                (status == PaymentStatus::Completed).then_some(amount),
            );
        }
        Ok(true)
    }

    fn settlement_batch(&self) -> i64 {
        self.inner.settlement_batch
    }

    /// The settlement worker: [`Self::settle_due`] every `interval` until shutdown.
    pub async fn run_settlement(self, interval: std::time::Duration, mut shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.settle_due().await {
                tracing::error!(error.cause = %e, "settling withdrawals failed");
            }
        }
    }

    /// A payment the principal may see.
    pub async fn payment(
        &self,
        principal: &Principal,
        id: PaymentId,
    ) -> Result<Payment, PaymentError> {
        let mut conn = self.db().conn().await?;
        let row = store::find_payment(&mut conn, id.uuid())
            .await?
            .filter(|r| principal.can_see_partner(PartnerId::from_uuid(r.partner_id)))
            .ok_or(PaymentError::NotFound("payment"))?;
        view(&row)
    }

    /// Payments, newest first, optionally of one wallet.
    pub async fn list(
        &self,
        principal: &Principal,
        wallet: Option<WalletId>,
        limit: u32,
        cursor: Option<PaymentId>,
    ) -> Result<Page<Payment>, PaymentError> {
        let mut conn = self.db().conn().await?;
        let rows = store::list_payments(
            &mut conn,
            principal.partner_id.map(|p| p.uuid()),
            wallet.map(|w| w.uuid()),
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let data = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(data, limit, |p: &Payment| p.id.to_string()))
    }
}

/// The payment module's checks of its records against the ledger, run with the ledger's own
/// (`admin ledger verify` and the periodic verification).
const PAYMENT_TRANSFERS: (&str, &str) = (
    "payment_transfers",
    "every payment has its ledger transfers, moving its amount, in the state its status says",
);
const TRANSFER_PAYMENTS: (&str, &str) = (
    "transfer_payments",
    "every ledger transfer made for a payment is one of that payment's",
);
/// Payments (or transfers) read per page: verification runs in bounded memory.
const VERIFY_PAGE: u32 = 500;
/// Violations reported per check, at most (like the ledger's).
const VERIFY_MAX: usize = 100;

impl PaymentService {
    /// Adds the payment checks to `report`: every payment row has exactly its transfers.
    pub async fn verify(
        &self,
        report: &mut crate::ledger::VerifyReport,
    ) -> Result<(), PaymentError> {
        use crate::ledger::Violation;
        let violation = |check: &str, subject: String, detail: String| Violation {
            check: check.to_owned(),
            subject,
            detail,
        };
        // Each payment's transfers, as its kind and status say.
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let rows = {
                let mut conn = self.db().conn().await?;
                store::payments_after(&mut conn, after, i64::from(VERIFY_PAGE)).await?
            };
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            let ids: Vec<TransferId> = rows
                .iter()
                .flat_map(|r| [Some(r.transfer_id), r.settlement_transfer_id])
                .flatten()
                .map(TransferId::from_uuid)
                .collect();
            let transfers: HashMap<uuid::Uuid, crate::ledger::StoredTransfer> = self
                .inner
                .ledger
                .transfers(Scope::System, ids)
                .await?
                .into_iter()
                .map(|t| (t.id.uuid(), t))
                .collect();
            for row in &rows {
                if let Some(problem) = model::transfers_problem(row_facts(row), |id| {
                    transfers.get(&id).map(|t| (t.amount, t.flags))
                }) && found.len() < VERIFY_MAX
                {
                    let subject = PaymentId::from_uuid(row.id).to_string();
                    found.push(violation(PAYMENT_TRANSFERS.0, subject, problem));
                }
            }
        }
        report.add(PAYMENT_TRANSFERS.0, PAYMENT_TRANSFERS.1, found);

        // Every transfer that names a payment is that payment's.
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .ledger
                .transfers_after(after, VERIFY_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let named: Vec<(TransferId, uuid::Uuid)> = page
                .iter()
                .filter_map(|t| {
                    let payment = t.metadata.as_ref()?.get("payment_id")?.as_str()?;
                    Some((t.id, payment.parse::<PaymentId>().ok()?.uuid()))
                })
                .collect();
            if named.is_empty() {
                continue;
            }
            let rows: HashMap<uuid::Uuid, PaymentRow> = {
                let mut conn = self.db().conn().await?;
                store::find_payments(&mut conn, named.iter().map(|(_, p)| *p).collect())
                    .await?
                    .into_iter()
                    .map(|r| (r.id, r))
                    .collect()
            };
            for (transfer, payment) in named {
                let ours = rows.get(&payment).is_some_and(|r| {
                    r.transfer_id == transfer.uuid()
                        || r.settlement_transfer_id == Some(transfer.uuid())
                });
                if !ours && found.len() < VERIFY_MAX {
                    found.push(violation(
                        TRANSFER_PAYMENTS.0,
                        transfer.to_string(),
                        format!(
                            "names payment {} but is not one of its transfers",
                            PaymentId::from_uuid(payment)
                        ),
                    ));
                }
            }
        }
        report.add(TRANSFER_PAYMENTS.0, TRANSFER_PAYMENTS.1, found);
        Ok(())
    }
}

/// What verification compares of a payment row.
fn row_facts(row: &PaymentRow) -> model::PaymentFacts<'_> {
    model::PaymentFacts {
        kind: &row.kind,
        status: &row.status,
        amount: row.amount,
        transfer_id: row.transfer_id,
        settlement_transfer_id: row.settlement_transfer_id,
    }
}

fn refused_label(e: &PaymentError) -> &'static str {
    use crate::platform::error::Problem;
    e.code()
}

/// Writes the payments of a ledger batch: all of a batch's payments at once, so a batch costs
/// a handful of statements whatever its size (customers and limit counters, payment rows,
/// events, stored answers) instead of several per payment.
struct PaymentWriter {
    kyc: Arc<dyn Compliance>,
    outbox: Arc<dyn Outbox>,
}

impl BatchWrite for PaymentWriter {
    fn write<'t, 'c>(
        &'t self,
        tx: &'t mut Tx<'c>,
        items: &'t [AttachedItem<'t>],
    ) -> TxFuture<'t, Result<Vec<(usize, SideWriteError)>, SideWriteError>> {
        Box::pin(write_payments(tx, &*self.kyc, &*self.outbox, items))
    }
}

/// The batch's payments whose transfer posted: the tier limits of every payer and payee (in
/// arrival order), refunds never beyond what was paid, then the payment rows, their events
/// and the stored idempotent answers, each one statement. Refuses (writing nothing) the
/// payments a rule refuses; the engine runs the batch again without them.
async fn write_payments(
    tx: &mut Tx<'_>,
    kyc: &dyn Compliance,
    outbox: &dyn Outbox,
    items: &[AttachedItem<'_>],
) -> Result<Vec<(usize, SideWriteError)>, SideWriteError> {
    let mut posted: Vec<(usize, &Attached, &crate::ledger::Applied)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let attached = item
            .item
            .downcast_ref::<Attached>()
            .ok_or_else(|| side_error(anyhow::anyhow!("a payment batch got another item")))?;
        // This may be a re-run of a batch that rolled back: what it stored is gone.
        if let Some(claim) = &attached.claim {
            claim.reset_completion();
        }
        if let Some(applied) = item
            .outcomes
            .first()
            .filter(|o| o.code == ResultCode::Ok)
            .and_then(|o| o.applied.as_ref())
        {
            posted.push((index, attached, applied));
        }
    }
    if posted.is_empty() {
        return Ok(Vec::new());
    }
    let mut movements: Vec<(PartnerId, Movement)> = Vec::with_capacity(posted.len() * 2);
    let mut movers: Vec<usize> = Vec::with_capacity(posted.len() * 2);
    for (index, a, applied) in &posted {
        if let Some(movement) = a.outgoing {
            movements.push((a.partner, movement));
            movers.push(*index);
        }
        if let Some((customer, account)) = a.incoming {
            let after = applied
                .entries
                .iter()
                .find(|e| e.account_id == account)
                .and_then(|e| e.totals.posted_balance())
                .unwrap_or(0);
            movements.push((
                a.partner,
                Movement {
                    customer_id: customer,
                    amount: a.amount,
                    direction: Direction::Incoming,
                    balance_after: Some(Money::from_minor(after, a.amount.currency())),
                },
            ));
            movers.push(*index);
        }
    }
    let answers = kyc
        .authorize_all(tx, &movements)
        .await
        .map_err(side_error)?;
    let mut refused: Vec<(usize, SideWriteError)> = Vec::new();
    for (index, answer) in movers.into_iter().zip(answers) {
        if let Err(e) = answer
            && !refused.iter().any(|(i, _)| *i == index)
        {
            refused.push((index, side_error(e)));
        }
    }
    if !refused.is_empty() {
        return Ok(refused);
    }
    // Refunds, under the original's row lock (and its advisory key, taken by the engine), so
    // concurrent refunds never return more than paid; this batch's earlier refunds count too.
    let mut refunding: HashMap<uuid::Uuid, i64> = HashMap::new();
    for (index, a, _) in &posted {
        let Some((original, paid)) = a.refund_of else {
            continue;
        };
        store::lock_payment(tx.conn(), original)
            .await
            .map_err(side_error)?;
        let earlier = refunding.get(&original).copied().unwrap_or(0);
        let before = store::refunded(tx.conn(), original)
            .await
            .map_err(side_error)?
            .saturating_add(earlier);
        let after = before.saturating_add(a.row.amount);
        if after > paid {
            refused.push((
                *index,
                side_error(PaymentError::RefundExceedsPayment {
                    remaining: Money::from_minor(paid.saturating_sub(before), a.amount.currency())
                        .format_amount(),
                }),
            ));
            continue;
        }
        refunding.insert(original, earlier.saturating_add(a.row.amount));
        if after == paid {
            store::set_status(
                tx.conn(),
                original,
                PaymentStatus::Reversed.as_str(),
                a.row.created_at,
            )
            .await
            .map_err(side_error)?;
        }
    }
    if !refused.is_empty() {
        return Ok(refused);
    }
    let rows: Vec<PaymentRow> = posted.iter().map(|(_, a, _)| a.row.clone()).collect();
    let mut events = Vec::with_capacity(posted.len());
    let mut bodies: Vec<(usize, &Claim, Vec<u8>)> = Vec::new();
    for (index, a, _) in &posted {
        let payment = view(&a.row).map_err(side_error)?;
        if let Some(claim) = &a.claim {
            let body =
                serde_json::to_vec(&payment).map_err(|e| side_error(anyhow::Error::from(e)))?;
            bodies.push((*index, claim, body));
        }
        events.push(NewEvent {
            partner_id: Some(a.partner),
            event_type: a.event.into(),
            data: serde_json::to_value(&payment).map_err(|e| side_error(anyhow::Error::from(e)))?,
        });
    }
    let answers: Vec<(&Claim, actix_web::http::StatusCode, &[u8])> = bodies
        .iter()
        .map(|(_, claim, body)| {
            (
                *claim,
                actix_web::http::StatusCode::CREATED,
                body.as_slice(),
            )
        })
        .collect();
    // The rows, the events and the stored answers go together: one round trip.
    let shared: &Tx<'_> = tx;
    let (inserted, recorded, stored) = futures_util::future::join3(
        store::insert_payments(shared.shared(), rows),
        outbox.record_events(shared, events),
        Claim::complete_all_in(shared, &answers),
    )
    .await;
    inserted.map_err(side_error)?;
    recorded.map_err(side_error)?;
    for ((index, _, _), result) in bodies.iter().zip(stored.map_err(side_error)?) {
        match result {
            Ok(()) => {}
            // A request racing with the same key committed (or is committing) first.
            Err(e) if is_claim_lost(&e) => {
                refused.push((*index, side_error(PaymentError::KeyInUse)))
            }
            Err(e) => refused.push((*index, side_error(e))),
        }
    }
    Ok(refused)
}

/// The settlement's attached write: the payment leaves `pending` exactly once (whoever posts
/// the settlement transfer first), with its event; a failed withdrawal gives its amount back to
/// the customer's daily and monthly totals.
async fn finish_withdrawal(
    tx: &mut Tx<'_>,
    (kyc, outbox): (&dyn Compliance, &dyn Outbox),
    row: &PaymentRow,
    customer: Option<crate::kyc::CustomerId>,
    amount: Money,
    status: PaymentStatus,
    outcomes: &[Outcome],
) -> Result<(), SideWriteError> {
    let settled = outcomes.first().is_some_and(|o| {
        matches!(
            o.code,
            ResultCode::Ok
                | ResultCode::Exists
                | ResultCode::PendingTransferAlreadyPosted
                | ResultCode::PendingTransferAlreadyVoided
        )
    });
    if !settled {
        return Ok(());
    }
    let at = now();
    if !store::finish_pending(tx.conn(), row.id, status.as_str(), at)
        .await
        .map_err(side_error)?
    {
        return Ok(());
    }
    if status == PaymentStatus::Failed
        && let Some(customer) = customer
    {
        kyc.release(tx, customer, amount, row.created_at)
            .await
            .map_err(side_error)?;
    }
    let payment = view(&PaymentRow {
        status: status.as_str().into(),
        updated_at: at,
        ..row.clone()
    })
    .map_err(side_error)?;
    outbox
        .record_event(
            tx,
            NewEvent {
                partner_id: Some(PartnerId::from_uuid(row.partner_id)),
                event_type: match status {
                    PaymentStatus::Completed => "payment.completed",
                    _ => "payment.failed",
                }
                .into(),
                data: serde_json::to_value(&payment)
                    .map_err(|e| side_error(anyhow::Error::from(e)))?,
            },
        )
        .await
        .map_err(side_error)?;
    Ok(())
}
