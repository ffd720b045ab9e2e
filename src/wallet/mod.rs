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
//! Payments reach wallets through [`WalletService::wallet_ref`].

mod error;
mod http;
mod model;
mod service;
mod store;

pub use error::WalletError;
pub use http::{WalletDoc, configure};
pub use model::{Change, FreezeMode, WalletId, WalletKind, WalletStatus};
pub use service::{
    Balance, NewWallet, Transaction, WALLET_ACCOUNT_CODE, Wallet, WalletAccount, WalletDetail,
    WalletRef, WalletService,
};

/// The wallet module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <WalletDoc as utoipa::OpenApi>::openapi()
}
