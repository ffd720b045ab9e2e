//! Authorizations as the API shows them, and their reads.

use super::{CardId, CardService};
use crate::card::error::CardError;
use crate::card::model::decision::TrailStep;
use crate::card::network::{Authorization, AuthorizationId, MerchantView, OperationView};
use crate::card::store::{self, AuthorizationRow, OperationRow};
use crate::kernel::PartnerId;
use crate::platform::http::pagination::Page;
use crate::platform::money::Money;
use crate::wallet::WalletId;

use super::authorize::stored_money;

/// The statuses an authorization can be in (the list's filter).
pub const STATUSES: [&str; 5] = ["pending", "captured", "reversed", "expired", "declined"];

fn internal(what: &str, e: impl std::fmt::Display) -> CardError {
    CardError::Internal(anyhow::anyhow!("stored {what}: {e}"))
}

pub(super) fn merchant_view(value: &serde_json::Value) -> MerchantView {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    MerchantView {
        name: text("name"),
        mcc: text("mcc"),
        country: text("country"),
    }
}

/// The view of a stored authorization; `operations` when they were read.
pub(super) fn view(
    row: &AuthorizationRow,
    operations: Option<&[OperationRow]>,
) -> Result<Authorization, CardError> {
    let money = |minor: i64| stored_money(minor, &row.currency).map(|m: Money| m.format_amount());
    let trail: Vec<TrailStep> =
        serde_json::from_value(row.trail.clone()).map_err(|e| internal("trail", e))?;
    let operations = operations
        .map(|ops| {
            ops.iter()
                .map(|op| {
                    Ok(OperationView {
                        kind: op.kind.clone(),
                        approved: op.approved,
                        amount: money(op.amount)?,
                        network_transaction_id: op.network_transaction_id.clone(),
                        detail: op.detail.clone(),
                        created: op.created_at,
                    })
                })
                .collect::<Result<Vec<_>, CardError>>()
        })
        .transpose()?;
    Ok(Authorization {
        id: AuthorizationId::from_uuid(row.id),
        card_id: row.card_id.map(CardId::from_uuid),
        wallet_id: row.wallet_id.map(WalletId::from_uuid),
        status: row.status.clone(),
        approved: row.decline_code.is_none(),
        decline_code: row.decline_code.clone(),
        response_code: row.response_code.clone(),
        amount: money(row.amount)?,
        held_amount: money(row.held)?,
        captured_amount: money(row.captured)?,
        currency: row.currency.clone(),
        merchant: merchant_view(&row.merchant),
        trail,
        network_transaction_id: row.network_transaction_id.clone(),
        expires_at: row.expires_at,
        operations,
        created: row.created_at,
        updated: row.updated_at,
    })
}

impl CardService {
    /// The view of `row`, with its operations when `detailed`.
    pub(super) async fn authorization_view(
        &self,
        row: AuthorizationRow,
        detailed: bool,
    ) -> Result<Authorization, CardError> {
        if !detailed {
            return view(&row, None);
        }
        let ops = {
            let mut conn = self.db().conn().await?;
            store::operations_of(&mut conn, row.id).await?
        };
        view(&row, Some(&ops))
    }

    /// An authorization of `partner`, with its operations; 404 for another partner's.
    pub async fn authorization(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
    ) -> Result<Authorization, CardError> {
        let row = self
            .authorization_row(partner, id.uuid())
            .await?
            .ok_or(CardError::NotFound("authorization"))?;
        self.authorization_view(row, true).await
    }

    /// A page of `partner`'s authorizations, newest first.
    pub async fn authorizations(
        &self,
        partner: PartnerId,
        card: Option<CardId>,
        status: Option<&str>,
        before: Option<AuthorizationId>,
        limit: u32,
    ) -> Result<Page<Authorization>, CardError> {
        if let Some(s) = status
            && !STATUSES.contains(&s)
        {
            return Err(CardError::validation(
                "status",
                "must be pending, captured, reversed, expired or declined",
            ));
        }
        let rows = {
            let mut conn = self.db().conn().await?;
            store::list_authorizations(
                &mut conn,
                partner.uuid(),
                card.map(|c| c.uuid()),
                status,
                before.map(|b| b.uuid()),
                i64::from(limit) + 1,
            )
            .await?
        };
        let views = rows
            .iter()
            .map(|r| view(r, None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(views, limit, |a| a.id.to_string()))
    }
}
