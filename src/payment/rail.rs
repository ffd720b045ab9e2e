//! The outside payment rail. Withdrawals go out through a [`Rail`]; the settlement worker asks
//! it whether each pending withdrawal settled. The [`SandboxRail`] (non-production) settles
//! after a configured delay and fails amounts ending in `.13`, so partners can test failures.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::platform::money::Money;

/// What the rail says of a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Not settled yet: ask again later.
    Pending,
    /// Paid out: post the held money.
    Succeeded,
    /// Refused by the rail: release the held money.
    Failed(String),
}

/// The rail could not be asked (a network rail's timeout, say): the settlement worker asks
/// again on its next round; nothing about the payment changes.
#[derive(Debug, thiserror::Error)]
#[error("the payment rail did not answer: {0}")]
pub struct RailError(pub String);

/// An outside payment rail. Asynchronous, so a rail that talks to a bank over the network
/// implements it as well as the sandbox does.
#[async_trait::async_trait]
pub trait Rail: Send + Sync + 'static {
    /// The rail's name, kept on the payment.
    fn name(&self) -> &'static str;
    /// When to ask about a withdrawal submitted at `now` for the first time.
    fn settle_after(&self, now: DateTime<Utc>) -> DateTime<Utc>;
    /// Whether the withdrawal of `amount` settled, as of `now`.
    async fn settlement(
        &self,
        amount: Money,
        settle_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Settlement, RailError>;
}

/// The sandbox: settles `delay` after submission; amounts ending in `.13` fail.
pub struct SandboxRail {
    pub delay: Duration,
}

#[async_trait::async_trait]
impl Rail for SandboxRail {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn settle_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.delay).unwrap_or(chrono::Duration::zero())
    }

    async fn settlement(
        &self,
        amount: Money,
        settle_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Settlement, RailError> {
        Ok(if now < settle_after {
            Settlement::Pending
        } else if amount.format_amount().ends_with(".13") {
            Settlement::Failed("the sandbox rail fails amounts ending in .13".into())
        } else {
            Settlement::Succeeded
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::money::Currency;

    fn usd(minor: i64) -> Money {
        Money::from_minor(minor, Currency::parse("USD").unwrap())
    }

    #[tokio::test]
    async fn the_sandbox_settles_after_its_delay_and_fails_amounts_ending_in_13() {
        let rail = SandboxRail {
            delay: Duration::from_secs(2),
        };
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let due = rail.settle_after(t0);
        assert_eq!(due, t0 + chrono::Duration::seconds(2));
        assert_eq!(
            rail.settlement(usd(1000), due, t0).await.unwrap(),
            Settlement::Pending
        );
        assert_eq!(
            rail.settlement(usd(1000), due, due).await.unwrap(),
            Settlement::Succeeded
        );
        assert!(matches!(
            rail.settlement(usd(1013), due, due).await.unwrap(),
            Settlement::Failed(_)
        ));
        assert!(matches!(
            rail.settlement(usd(13), due, due).await.unwrap(),
            Settlement::Failed(_)
        ));
        assert_eq!(
            rail.settlement(usd(1130), due, due).await.unwrap(),
            Settlement::Succeeded
        );
    }
}
