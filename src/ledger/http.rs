//! The ledger's routes (API.md "Ledger"), for partners that model their own books. A partner
//! sees and posts to its own accounts only; platform admins act as the platform.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::engine::SideWrite;
use super::error::SideWriteError;
use super::model::{
    AccountId, CreateAccount, CreateTransfers, Outcome, Scope, StoredTransfer, Totals, TransferId,
    TransferInput,
};
use super::service::{Account, HistoryEntry, LedgerService};
use crate::kernel::{Access, Area, Principal};
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::pagination::{List, PageQuery};
use crate::platform::http::{Json, PathId};
use crate::platform::idempotency::{Claim, Idempotency};
use crate::platform::money::{Currency, Money};

/// The route that takes batches, with its own body limit (`ledger.max_request_bytes`).
pub const TRANSFERS_ROUTE: &str = "/v1/ledger/transfers";

/// Registers the routes; `max_request_bytes` bounds a batch of transfers.
pub fn configure(cfg: &mut web::ServiceConfig, max_request_bytes: usize) {
    cfg.service(web::resource("/v1/ledger/accounts").route(web::post().to(create_account)))
        .service(web::resource("/v1/ledger/accounts/{id}").route(web::get().to(get_account)))
        .service(
            web::resource("/v1/ledger/accounts/{id}/entries").route(web::get().to(list_entries)),
        )
        .service(
            web::resource("/v1/ledger/accounts/{id}/balance").route(web::get().to(get_balance)),
        )
        .service(
            // The literal (not TRANSFERS_ROUTE) so route scans find it; they are the same.
            web::resource("/v1/ledger/transfers")
                .app_data(crate::platform::http::json_config(max_request_bytes))
                .route(web::post().to(create_transfers)),
        )
        .service(web::resource("/v1/ledger/transfers/{id}").route(web::get().to(get_transfer)));
}

#[derive(OpenApi)]
#[openapi(
    paths(create_account, get_account, list_entries, get_balance, create_transfers, get_transfer),
    components(schemas(CreateAccount, AccountView, BalanceView, TransferInput, CreateTransfers,
                       TransferResults, TransferResult, TransferView, EntryView, List<EntryView>)),
    tags((name = "ledger", description = include_str!("model/result_codes.md")))
)]
pub struct LedgerDoc;

/// The ledger scope of a caller: its partner, or the platform for platform admins.
fn scope_of(principal: &Principal, access: Access) -> Result<Scope, ApiError> {
    principal.require(Area::Ledger, access)?;
    Ok(match principal.partner_id {
        Some(partner) => Scope::Partner(partner),
        None => Scope::System,
    })
}

fn money(minor: i64, currency: Currency) -> String {
    Money::from_minor(minor, currency).format_amount()
}

// ----- accounts ---------------------------------------------------------------------------------

/// An account's balances: `posted` = credits - debits posted; `available` = posted - pending
/// debits; `pending` = pending credits - pending debits.
#[derive(Serialize, ToSchema)]
pub struct BalanceView {
    posted: String,
    available: String,
    pending: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    id: AccountId,
    currency: String,
    code: i32,
    flags: Vec<&'static str>,
    metadata: Option<serde_json::Value>,
    debits_pending: String,
    debits_posted: String,
    credits_pending: String,
    credits_posted: String,
    balance: BalanceView,
    created_at: DateTime<Utc>,
}

fn balance_view(totals: &Totals, currency: Currency) -> BalanceView {
    let pending = totals.credits_pending.saturating_sub(totals.debits_pending);
    BalanceView {
        posted: money(totals.posted_balance().unwrap_or(i64::MIN), currency),
        available: money(totals.available().unwrap_or(i64::MIN), currency),
        pending: money(pending, currency),
    }
}

fn account_view(account: Account) -> AccountView {
    let s = &account.state;
    let c = s.currency;
    AccountView {
        id: s.id,
        currency: c.code().to_owned(),
        code: account.code,
        flags: s.flags.names(),
        metadata: account.metadata.clone(),
        debits_pending: money(s.totals.debits_pending, c),
        debits_posted: money(s.totals.debits_posted, c),
        credits_pending: money(s.totals.credits_pending, c),
        credits_posted: money(s.totals.credits_posted, c),
        balance: balance_view(&s.totals, c),
        created_at: account.created_at,
    }
}

/// Create an account.
#[utoipa::path(post, path = "/v1/ledger/accounts", tag = "ledger", request_body = CreateAccount, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created.", body = AccountView),
        (status = 400, description = "Unknown currency or flag, code out of range, metadata not an object.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_account(
    ledger: web::Data<LedgerService>,
    principal: Principal,
    body: Json<CreateAccount>,
) -> Result<HttpResponse, ApiError> {
    let scope = scope_of(&principal, Access::Write)?;
    let account = body.into_inner().parse()?;
    let mut created = ledger.create_accounts(scope, vec![account]).await?;
    let account = created
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no account created")))?;
    Ok(HttpResponse::Created().json(account_view(account)))
}

/// An account with its totals and balances.
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id (acct_...)")),
    responses(
        (status = 200, description = "The account.", body = AccountView),
        (status = 404, description = "No such account.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_account(
    ledger: web::Data<LedgerService>,
    principal: Principal,
    PathId(id): PathId<AccountId>,
) -> Result<web::Json<AccountView>, ApiError> {
    let scope = scope_of(&principal, Access::Read)?;
    Ok(web::Json(account_view(ledger.account(scope, id).await?)))
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    account_id: AccountId,
    /// Position in the account's history (1, 2, ...); also the cursor.
    seq: i64,
    transfer_id: TransferId,
    /// `debit` or `credit`.
    direction: &'static str,
    /// Change to the account's posted total on this side.
    posted_amount: String,
    /// Change to the account's pending total on this side (negative when released).
    pending_amount: String,
    /// The account's totals right after this entry.
    debits_pending: String,
    debits_posted: String,
    credits_pending: String,
    credits_posted: String,
    balance: BalanceView,
    created_at: DateTime<Utc>,
}

fn entry_view(e: HistoryEntry, currency: Currency) -> EntryView {
    EntryView {
        account_id: e.account_id,
        seq: e.seq,
        transfer_id: e.transfer_id,
        direction: if e.is_credit { "credit" } else { "debit" },
        posted_amount: money(e.posted_delta, currency),
        pending_amount: money(e.pending_delta, currency),
        debits_pending: money(e.totals.debits_pending, currency),
        debits_posted: money(e.totals.debits_posted, currency),
        credits_pending: money(e.totals.credits_pending, currency),
        credits_posted: money(e.totals.credits_posted, currency),
        balance: balance_view(&e.totals, currency),
        created_at: e.created_at,
    }
}

/// An account's entries, newest first, each with the totals after it.
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}/entries", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id"), PageQuery),
    responses(
        (status = 200, description = "A page of entries.", body = List<EntryView>),
        (status = 400, description = "Invalid limit or cursor.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_entries(
    ledger: web::Data<LedgerService>,
    principal: Principal,
    PathId(id): PathId<AccountId>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<List<EntryView>>, ApiError> {
    let scope = scope_of(&principal, Access::Read)?;
    let limit = query.limit()?;
    let before = query.cursor(|c| c.parse::<i64>())?;
    let account = ledger.account(scope, id).await?;
    let page = ledger.entries(scope, id, before, limit).await?;
    let currency = account.state.currency;
    Ok(web::Json(page.map(|e| entry_view(e, currency))))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    /// RFC 3339 instant; default now.
    at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct PointInTimeBalance {
    account_id: AccountId,
    currency: String,
    at: DateTime<Utc>,
    debits_pending: String,
    debits_posted: String,
    credits_pending: String,
    credits_posted: String,
    balance: BalanceView,
}

/// An account's totals and balances as they were at `at`.
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}/balance", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id"), BalanceQuery),
    responses(
        (status = 200, description = "The balance at that instant.", body = PointInTimeBalance),
        (status = 404, description = "No such account.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_balance(
    ledger: web::Data<LedgerService>,
    principal: Principal,
    PathId(id): PathId<AccountId>,
    query: web::Query<BalanceQuery>,
) -> Result<web::Json<PointInTimeBalance>, ApiError> {
    let scope = scope_of(&principal, Access::Read)?;
    let at = query.at.unwrap_or_else(Utc::now);
    let (account, totals) = ledger.balance_at(scope, id, at).await?;
    let c = account.state.currency;
    Ok(web::Json(PointInTimeBalance {
        account_id: id,
        currency: c.code().to_owned(),
        at,
        debits_pending: money(totals.debits_pending, c),
        debits_posted: money(totals.debits_posted, c),
        credits_pending: money(totals.credits_pending, c),
        credits_posted: money(totals.credits_posted, c),
        balance: balance_view(&totals, c),
    }))
}

// ----- transfers --------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct TransferResult {
    id: TransferId,
    /// `ok` or the code that refused it (see the tag's description).
    result: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct TransferResults {
    results: Vec<TransferResult>,
}

/// Post 1 to 8190 transfers, in order. The answer is 200 with one result per transfer, in
/// order, even when some fail: each failure has its own code, and a failure moves nothing.
/// Resubmitting a transfer id with identical fields answers `exists` and moves nothing.
/// Under an `Idempotency-Key` the answer is stored in the transaction of the transfers.
#[utoipa::path(post, path = "/v1/ledger/transfers", tag = "ledger", request_body = CreateTransfers, security(("bearer" = [])),
    responses(
        (status = 200, description = "One result per transfer, in order.", body = TransferResults),
        (status = 400, description = "A malformed transfer (the whole request is refused; `field` names it).", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`ledger_overloaded`: retry with the same ids.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_transfers(
    ledger: web::Data<LedgerService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    body: Json<CreateTransfers>,
) -> Result<HttpResponse, ApiError> {
    let scope = scope_of(&principal, Access::Write)?;
    let transfers = body.into_inner().parse()?;
    let outcomes = ledger
        .post(scope, transfers, claim.map(complete_claim))
        .await?;
    let body = results_body(&outcomes).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// The body of a posting's answer: exactly the bytes returned, and under an idempotency key
/// the bytes stored for replays.
fn results_body(outcomes: &[Outcome]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&TransferResults {
        results: outcomes
            .iter()
            .map(|o| TransferResult {
                id: o.id,
                result: o.code.as_str(),
            })
            .collect(),
    })
}

/// Stores the answer under the request's idempotency key inside the posting's transaction, so
/// the transfers and the stored answer commit together (it may run again on a retried batch).
fn complete_claim(claim: Claim) -> SideWrite {
    Box::new(move |tx, outcomes| {
        let claim = claim.clone();
        let body = results_body(outcomes);
        Box::pin(async move {
            let body = body.map_err(|e| SideWriteError(Box::new(e)))?;
            claim
                .complete_in(tx, StatusCode::OK, &body)
                .await
                .map_err(|e| SideWriteError(Box::new(e)))
        })
    })
}

#[derive(Serialize, ToSchema)]
pub struct TransferView {
    id: TransferId,
    debit_account_id: AccountId,
    credit_account_id: AccountId,
    /// What moved (a post's posted amount; 0 for a void).
    amount: String,
    currency: String,
    code: i32,
    flags: Vec<&'static str>,
    pending_id: Option<TransferId>,
    timeout_secs: Option<u32>,
    expires_at: Option<DateTime<Utc>>,
    metadata: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
}

fn transfer_view(t: StoredTransfer) -> TransferView {
    TransferView {
        id: t.id,
        debit_account_id: t.debit_account_id,
        credit_account_id: t.credit_account_id,
        amount: money(t.amount, t.currency),
        currency: t.currency.code().to_owned(),
        code: t.code,
        flags: t.flags.names(),
        pending_id: t.pending_id,
        timeout_secs: t.timeout_secs,
        expires_at: t.expires_at,
        metadata: t.metadata,
        created_at: t.created_at,
    }
}

/// A transfer.
#[utoipa::path(get, path = "/v1/ledger/transfers/{id}", tag = "ledger", security(("bearer" = [])),
    params(("id" = String, Path, description = "Transfer id (xfer_...)")),
    responses(
        (status = 200, description = "The transfer.", body = TransferView),
        (status = 404, description = "No such transfer.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_transfer(
    ledger: web::Data<LedgerService>,
    principal: Principal,
    PathId(id): PathId<TransferId>,
) -> Result<web::Json<TransferView>, ApiError> {
    let scope = scope_of(&principal, Access::Read)?;
    Ok(web::Json(transfer_view(ledger.transfer(scope, id).await?)))
}
