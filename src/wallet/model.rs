//! Wallet types and rules: kinds, the status machine, what a freeze blocks, and how a ledger
//! entry reads as a wallet transaction. Pure code.

use serde::Serialize;
use utoipa::ToSchema;

use crate::ledger::AccountFlags;
use crate::platform::error::FieldError;
use crate::platform::ids::define_id;

define_id!(WalletId, WalletIdKind, "wal", "wallet");

/// What the wallet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WalletKind {
    Personal,
    Business,
}

impl WalletKind {
    pub fn parse(value: &str) -> Option<WalletKind> {
        match value {
            "personal" => Some(Self::Personal),
            "business" => Some(Self::Business),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Personal => "personal",
            Self::Business => "business",
        }
    }
}

/// A wallet's lifecycle: `active <-> frozen`, and `closed` (only at zero, never reopened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WalletStatus {
    Active,
    Frozen,
    Closed,
}

impl WalletStatus {
    pub fn parse(value: &str) -> Option<WalletStatus> {
        match value {
            "active" => Some(Self::Active),
            "frozen" => Some(Self::Frozen),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Frozen => "frozen",
            Self::Closed => "closed",
        }
    }
}

/// What a freeze blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FreezeMode {
    /// Nothing moves in or out.
    All,
    /// Money may arrive but not leave (`block_debits`).
    Debits,
    /// Money may leave but not arrive (`block_credits`).
    Credits,
}

impl FreezeMode {
    pub fn parse(value: &str) -> Option<FreezeMode> {
        match value {
            "all" => Some(Self::All),
            "debits" | "block_debits" => Some(Self::Debits),
            "credits" | "block_credits" => Some(Self::Credits),
            _ => None,
        }
    }

    /// The `mode` of a freeze request: `all` when absent.
    pub fn from_request(mode: Option<&str>) -> Result<FreezeMode, FieldError> {
        match mode {
            None => Ok(Self::All),
            Some(m) => Self::parse(m)
                .ok_or_else(|| FieldError::new("mode", "must be all, debits or credits")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Debits => "debits",
            Self::Credits => "credits",
        }
    }

    /// The ledger account flags that enforce it.
    pub fn account_flags(self) -> AccountFlags {
        match self {
            Self::All => AccountFlags::DEBITS_BLOCKED | AccountFlags::CREDITS_BLOCKED,
            Self::Debits => AccountFlags::DEBITS_BLOCKED,
            Self::Credits => AccountFlags::CREDITS_BLOCKED,
        }
    }
}

/// Every flag a freeze may set.
pub const FREEZE_FLAGS: AccountFlags =
    AccountFlags::DEBITS_BLOCKED.union(AccountFlags::CREDITS_BLOCKED);

/// A requested status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Freeze(FreezeMode),
    Unfreeze,
    Close,
}

/// Why a change is not possible from the current status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRefused {
    Closed,
    NotFrozen,
    AlreadyFrozen,
}

/// The status after `change`, or why it cannot happen. Re-freezing with another mode is a
/// change of mode; closing works from active or frozen (the balance rule is checked against
/// the ledger, under its lock).
pub fn next_status(
    current: WalletStatus,
    mode: Option<FreezeMode>,
    change: Change,
) -> Result<(WalletStatus, Option<FreezeMode>), ChangeRefused> {
    match (current, change) {
        (WalletStatus::Closed, _) => Err(ChangeRefused::Closed),
        (WalletStatus::Frozen, Change::Freeze(m)) if mode == Some(m) => {
            Err(ChangeRefused::AlreadyFrozen)
        }
        (_, Change::Freeze(m)) => Ok((WalletStatus::Frozen, Some(m))),
        (WalletStatus::Frozen, Change::Unfreeze) => Ok((WalletStatus::Active, None)),
        (WalletStatus::Active, Change::Unfreeze) => Err(ChangeRefused::NotFrozen),
        (_, Change::Close) => Ok((WalletStatus::Closed, None)),
    }
}

/// How one ledger entry of a wallet's account reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Money moved (posted).
    Posted,
    /// Money held (a pending transfer), not yet moved.
    Held,
    /// A hold released without moving (voided or expired).
    Released,
}

/// `(kind, amount)` of an entry from its deltas on the wallet's side: a post of a hold shows
/// the posted amount; a void shows the released amount.
pub fn entry_kind(pending_delta: i64, posted_delta: i64) -> (EntryKind, i64) {
    if posted_delta != 0 {
        (
            EntryKind::Posted,
            posted_delta.checked_abs().unwrap_or(i64::MAX),
        )
    } else if pending_delta > 0 {
        (EntryKind::Held, pending_delta)
    } else {
        (
            EntryKind::Released,
            pending_delta.checked_abs().unwrap_or(i64::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freeze_request_defaults_to_all_and_refuses_unknown_modes() {
        assert_eq!(FreezeMode::from_request(None), Ok(FreezeMode::All));
        assert_eq!(
            FreezeMode::from_request(Some("block_debits")),
            Ok(FreezeMode::Debits)
        );
        let err = FreezeMode::from_request(Some("some")).unwrap_err();
        assert_eq!(err.field, "mode");
    }

    #[test]
    fn the_status_machine_allows_exactly_the_documented_changes() {
        use Change::*;
        use WalletStatus::*;
        let all = FreezeMode::All;
        let debits = FreezeMode::Debits;
        assert_eq!(
            next_status(Active, None, Freeze(all)),
            Ok((Frozen, Some(all)))
        );
        assert_eq!(
            next_status(Frozen, Some(all), Freeze(debits)),
            Ok((Frozen, Some(debits)))
        );
        assert_eq!(
            next_status(Frozen, Some(all), Freeze(all)),
            Err(ChangeRefused::AlreadyFrozen)
        );
        assert_eq!(next_status(Frozen, Some(all), Unfreeze), Ok((Active, None)));
        assert_eq!(
            next_status(Active, None, Unfreeze),
            Err(ChangeRefused::NotFrozen)
        );
        assert_eq!(next_status(Active, None, Close), Ok((Closed, None)));
        assert_eq!(next_status(Frozen, Some(all), Close), Ok((Closed, None)));
        for change in [Freeze(all), Unfreeze, Close] {
            assert_eq!(
                next_status(Closed, None, change),
                Err(ChangeRefused::Closed)
            );
        }
    }

    #[test]
    fn freeze_modes_map_to_the_ledger_flags() {
        assert_eq!(
            FreezeMode::Debits.account_flags(),
            AccountFlags::DEBITS_BLOCKED
        );
        assert_eq!(
            FreezeMode::Credits.account_flags(),
            AccountFlags::CREDITS_BLOCKED
        );
        assert_eq!(FreezeMode::All.account_flags(), FREEZE_FLAGS);
        assert_eq!(FreezeMode::parse("block_debits"), Some(FreezeMode::Debits));
        assert_eq!(FreezeMode::parse("everything"), None);
    }

    #[test]
    fn entries_read_as_posted_held_or_released() {
        assert_eq!(entry_kind(0, 500), (EntryKind::Posted, 500));
        assert_eq!(entry_kind(0, -500), (EntryKind::Posted, 500));
        assert_eq!(entry_kind(700, 0), (EntryKind::Held, 700));
        assert_eq!(entry_kind(-700, 600), (EntryKind::Posted, 600));
        assert_eq!(entry_kind(-700, 0), (EntryKind::Released, 700));
    }
}
