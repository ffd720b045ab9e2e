//! Reading applications: one, a customer's latest, a page of them, and the view partners
//! and reviewers get (the document shown by its last four characters only; sanctions
//! candidates to platform admins only).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Document, KycService, ScreeningHit, application_context, outcome_of, tier_u8};
use crate::kernel::{PartnerId, Principal};
use crate::kyc::error::KycError;
use crate::kyc::model::{self, ApplicationId, Check, CustomerId, Status};
use crate::kyc::store::{self, ApplicationRow};
use crate::platform::http::pagination::Page;

/// One state change of an application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Transition {
    pub from: Option<String>,
    pub to: String,
    /// `system:<rule>`, or the user or API key that acted.
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A KYC application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Application {
    #[schema(value_type = String, example = "kyc_01h455vb4pex5vsknk084sn02q")]
    pub id: ApplicationId,
    #[schema(value_type = String)]
    pub customer_id: CustomerId,
    #[schema(value_type = String)]
    pub partner_id: PartnerId,
    pub status: Status,
    pub requested_tier: u8,
    /// The tier an approval granted.
    pub granted_tier: Option<u8>,
    /// `submission`, or `rescreening` when a list load flagged an approved customer.
    pub origin: String,
    pub document_type: Option<String>,
    /// Never the whole number.
    pub document_number_last4: Option<String>,
    pub document_country: Option<String>,
    pub document_expiry: Option<NaiveDate>,
    pub checks: Vec<Check>,
    /// What `awaiting_documents` waits for.
    pub missing: Vec<String>,
    /// The rule or reviewer decision behind the current status (`underage`,
    /// `sanctions_match`, `manual_approval`, ...).
    pub decision_code: Option<String>,
    pub decision_reason: Option<String>,
    /// Sanctions candidates; shown to platform admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screening: Option<Vec<ScreeningHit>>,
    pub transitions: Vec<Transition>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub decided: Option<DateTime<Utc>>,
}

impl KycService {
    /// An application the principal may see.
    pub async fn application(
        &self,
        principal: &Principal,
        id: ApplicationId,
    ) -> Result<Application, KycError> {
        let mut conn = self.db().conn().await?;
        let row = store::find_application(&mut conn, id.uuid())
            .await?
            .filter(|r| principal.can_see_partner(PartnerId::from_uuid(r.partner_id)))
            .ok_or(KycError::NotFound("application"))?;
        drop(conn);
        self.application_view(row, principal.is_platform_admin())
            .await
    }

    /// The customer's latest application.
    pub async fn latest_application(
        &self,
        principal: &Principal,
        customer: CustomerId,
    ) -> Result<Application, KycError> {
        let mut conn = self.db().conn().await?;
        store::find_customer(&mut conn, customer.uuid())
            .await?
            .filter(|r| principal.can_see_partner(PartnerId::from_uuid(r.partner_id)))
            .ok_or(KycError::NotFound("customer"))?;
        let row = store::latest_application(&mut conn, customer.uuid())
            .await?
            .ok_or(KycError::NotFound("application"))?;
        drop(conn);
        self.application_view(row, principal.is_platform_admin())
            .await
    }

    /// Applications, newest first, optionally by status; platform admins see all partners'.
    pub async fn list_applications(
        &self,
        principal: &Principal,
        status: Option<Status>,
        limit: u32,
        cursor: Option<ApplicationId>,
    ) -> Result<Page<Application>, KycError> {
        let mut conn = self.db().conn().await?;
        let rows = store::list_applications(
            &mut conn,
            principal.partner_id.map(|p| p.uuid()),
            status.map(Status::as_str),
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        drop(conn);
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(
                self.application_view(row, principal.is_platform_admin())
                    .await?,
            );
        }
        Ok(Page::from_rows(views, limit, |a: &Application| {
            a.id.to_string()
        }))
    }

    pub(super) async fn application_view(
        &self,
        row: ApplicationRow,
        reviewer: bool,
    ) -> Result<Application, KycError> {
        let mut conn = self.db().conn().await?;
        let transitions = store::transitions(&mut conn, &[row.id])
            .await?
            .into_iter()
            .map(|t| Transition {
                from: t.from_status,
                to: t.to_status,
                actor: t.actor,
                reason: t.reason,
                at: t.created_at,
            })
            .collect();
        let document: Option<Document> = match row.document_enc.as_deref() {
            Some(sealed) => Some(
                serde_json::from_str(&self.vault().open(&application_context(row.id), sealed)?)
                    .map_err(|e| KycError::Internal(e.into()))?,
            ),
            None => None,
        };
        let outcome = outcome_of(&row);
        Ok(Application {
            id: ApplicationId::from_uuid(row.id),
            customer_id: CustomerId::from_uuid(row.customer_id),
            partner_id: PartnerId::from_uuid(row.partner_id),
            status: Status::parse(&row.status).unwrap_or(Status::Pending),
            requested_tier: tier_u8(row.requested_tier),
            granted_tier: row.granted_tier.map(tier_u8),
            origin: row.origin,
            document_type: document.as_ref().map(|d| d.document_type.clone()),
            document_number_last4: document.as_ref().map(|d| model::last4(&d.number)),
            document_country: document.as_ref().map(|d| d.country.clone()),
            document_expiry: document.as_ref().and_then(|d| d.expiry),
            checks: outcome.checks,
            missing: outcome.missing,
            decision_code: outcome.code,
            decision_reason: outcome.reason,
            screening: reviewer.then_some(outcome.screening),
            transitions,
            created: row.created_at,
            updated: row.updated_at,
            decided: row.decided_at,
        })
    }
}
