//! Wallets: a partner's customers' money, each wallet one ledger account
//! (`debits_must_not_exceed_credits`) with a lifecycle.
//!
//! - Open (`wal_`) for a customer of the partner, in one currency; `wallet.created`.
//! - Freeze (`all`, `debits`, `credits`), unfreeze, close (at zero only, final): the wallet's
//!   status and its ledger account's `debits_blocked` / `credits_blocked` / `closed` flags change
//!   in one transaction, so the posting engine refuses movements from that commit on. Every
//!   change keeps who and why; `wallet.frozen`, `wallet.unfrozen`, `wallet.closed`.
//! - Balance and statement straight from the ledger (entries with the totals after each).
//!
//! Payments reach wallets through the [`Wallets`] trait.

mod error;
mod http;
mod model;
mod service;
mod store;

use crate::kernel::PartnerId;

pub use error::WalletError;
pub use http::configure;
pub use model::{Change, FreezeMode, WalletId, WalletKind, WalletStatus};
pub use service::{Balance, Transaction, Wallet, WalletAccount, WalletRef, WalletService};

/// The wallets' face for other modules (payments, cards): the facts a movement needs about
/// a partner's wallets. 404 (`WalletError::NotFound`) for another partner's wallet.
#[async_trait::async_trait]
pub trait Wallets: Send + Sync {
    /// A wallet of `partner`: its account, customer, currency and status.
    async fn wallet_ref(&self, partner: PartnerId, id: WalletId) -> Result<WalletRef, WalletError>;

    /// Two wallets of `partner` in one read (a refund's payer and payee).
    async fn wallet_pair(
        &self,
        partner: PartnerId,
        first: WalletId,
        second: WalletId,
    ) -> Result<(WalletRef, WalletRef), WalletError>;

    /// The immutable facts of two wallets of `partner` (a payment's payer and payee), without
    /// a database read once known.
    async fn wallet_accounts(
        &self,
        partner: PartnerId,
        first: WalletId,
        second: WalletId,
    ) -> Result<(WalletAccount, WalletAccount), WalletError>;
}

#[async_trait::async_trait]
impl Wallets for WalletService {
    async fn wallet_ref(&self, partner: PartnerId, id: WalletId) -> Result<WalletRef, WalletError> {
        WalletService::wallet_ref(self, partner, id).await
    }

    async fn wallet_pair(
        &self,
        partner: PartnerId,
        first: WalletId,
        second: WalletId,
    ) -> Result<(WalletRef, WalletRef), WalletError> {
        WalletService::wallet_pair(self, partner, first, second).await
    }

    async fn wallet_accounts(
        &self,
        partner: PartnerId,
        first: WalletId,
        second: WalletId,
    ) -> Result<(WalletAccount, WalletAccount), WalletError> {
        WalletService::wallet_accounts(self, partner, first, second).await
    }
}

/// The wallet module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::WalletDoc as utoipa::OpenApi>::openapi()
}
