//! Payment types and the mapping of ledger results to payment refusals. Pure code.

use serde::Serialize;
use utoipa::ToSchema;

use crate::ledger::ResultCode;
use crate::platform::ids::define_id;

define_id!(PaymentId, PaymentIdKind, "pay", "payment");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    P2p,
    Deposit,
    Withdrawal,
    Refund,
}

impl PaymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P2p => "p2p",
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
            Self::Refund => "refund",
        }
    }

    pub fn parse(value: &str) -> Option<PaymentKind> {
        [Self::P2p, Self::Deposit, Self::Withdrawal, Self::Refund]
            .into_iter()
            .find(|k| k.as_str() == value)
    }

    /// The ledger transfer code of this kind of payment.
    pub fn transfer_code(self) -> i32 {
        match self {
            Self::P2p => 1,
            Self::Deposit => 2,
            Self::Withdrawal => 3,
            Self::Refund => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Completed,
    Failed,
    Reversed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Reversed => "reversed",
        }
    }

    pub fn parse(value: &str) -> Option<PaymentStatus> {
        [Self::Pending, Self::Completed, Self::Failed, Self::Reversed]
            .into_iter()
            .find(|k| k.as_str() == value)
    }
}

/// Why the ledger refused a payment's transfer, as partners see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    InsufficientFunds,
    WalletFrozen,
    WalletClosed,
    CurrencyMismatch,
    /// Anything else the ledger answered (never expected for a well-formed payment).
    Other(ResultCode),
}

pub fn refusal(code: ResultCode) -> Refusal {
    match code {
        ResultCode::ExceedsCredits => Refusal::InsufficientFunds,
        ResultCode::DebitsBlocked | ResultCode::CreditsBlocked => Refusal::WalletFrozen,
        ResultCode::AccountClosed => Refusal::WalletClosed,
        ResultCode::CurrencyMismatch => Refusal::CurrencyMismatch,
        other => Refusal::Other(other),
    }
}

/// What verification compares of a stored payment with its transfers.
pub struct PaymentFacts<'a> {
    pub kind: &'a str,
    pub status: &'a str,
    pub amount: i64,
    pub transfer_id: uuid::Uuid,
    pub settlement_transfer_id: Option<uuid::Uuid>,
}

/// What is wrong between a payment and its ledger transfers (`transfer` looks one up: what it
/// moved and its flags), if anything. A withdrawal's transfer is a hold (pending) and, once
/// settled, its settlement posts it (completed) or voids it (failed); every other payment is
/// one posted transfer of its amount.
pub fn transfers_problem(
    payment: PaymentFacts<'_>,
    transfer: impl Fn(uuid::Uuid) -> Option<(i64, crate::ledger::TransferFlags)>,
) -> Option<String> {
    use crate::ledger::TransferFlags as F;
    let Some((amount, flags)) = transfer(payment.transfer_id) else {
        return Some(format!("its transfer {} is missing", payment.transfer_id));
    };
    if amount != payment.amount {
        return Some(format!(
            "its transfer moved {amount}, the payment says {}",
            payment.amount
        ));
    }
    let withdrawal = payment.kind == PaymentKind::Withdrawal.as_str();
    if withdrawal != flags.contains(F::PENDING) {
        return Some(format!(
            "a {} whose transfer is {}",
            payment.kind,
            if flags.contains(F::PENDING) {
                "a hold"
            } else {
                "not a hold"
            }
        ));
    }
    if !withdrawal {
        return None;
    }
    let settled = payment
        .settlement_transfer_id
        .and_then(|id| transfer(id).map(|t| (id, t)));
    match (payment.status, settled) {
        ("pending", None) => None,
        ("pending", Some((id, _))) => Some(format!("pending, yet settled by {id}")),
        ("completed", Some((_, (moved, f))))
            if f.contains(F::POST_PENDING) && moved == payment.amount =>
        {
            None
        }
        ("failed", Some((_, (_, f)))) if f.contains(F::VOID_PENDING) => None,
        (status, Some((id, (moved, f)))) => Some(format!(
            "{status}, but its settlement {id} {} {moved}",
            if f.contains(F::POST_PENDING) {
                "posted"
            } else {
                "voided"
            }
        )),
        (status, None) => Some(format!("{status}, but no settlement transfer")),
    }
}

/// A description as stored: trimmed, 1-500 characters without control characters.
pub fn description(value: Option<&str>) -> Result<Option<String>, &'static str> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(d) if d.chars().count() > 500 || d.chars().any(char::is_control) => {
            Err("must be at most 500 characters without control characters")
        }
        Some(d) => Ok(Some(d.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_results_read_as_payment_refusals() {
        assert_eq!(
            refusal(ResultCode::ExceedsCredits),
            Refusal::InsufficientFunds
        );
        assert_eq!(refusal(ResultCode::DebitsBlocked), Refusal::WalletFrozen);
        assert_eq!(refusal(ResultCode::CreditsBlocked), Refusal::WalletFrozen);
        assert_eq!(refusal(ResultCode::AccountClosed), Refusal::WalletClosed);
        assert_eq!(
            refusal(ResultCode::CurrencyMismatch),
            Refusal::CurrencyMismatch
        );
        assert_eq!(
            refusal(ResultCode::OverflowsCreditsPosted),
            Refusal::Other(ResultCode::OverflowsCreditsPosted)
        );
    }

    #[test]
    fn descriptions_are_trimmed_and_bounded() {
        assert_eq!(description(None), Ok(None));
        assert_eq!(description(Some("  ")), Ok(None));
        assert_eq!(description(Some(" rent ")), Ok(Some("rent".into())));
        assert!(description(Some(&"x".repeat(501))).is_err());
        assert!(description(Some("a\u{7}b")).is_err());
    }

    #[test]
    fn kinds_and_statuses_round_trip() {
        for k in ["p2p", "deposit", "withdrawal", "refund"] {
            assert_eq!(PaymentKind::parse(k).map(PaymentKind::as_str), Some(k));
        }
        for s in ["pending", "completed", "failed", "reversed"] {
            assert_eq!(PaymentStatus::parse(s).map(PaymentStatus::as_str), Some(s));
        }
        assert_eq!(PaymentKind::parse("wire"), None);
    }
}
