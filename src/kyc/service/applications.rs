//! The KYC workflow: submitting an application (the automated checks and their decision),
//! a reviewer's decision on one in review, and what every decision does to the customer
//! (tier, status, event, email).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{
    Application, Document, KycService, Outcome, ScreeningHit, application_context, context,
    outcome_of, set_outcome, tier_u8,
};
use crate::kernel::{PartnerId, Principal};
use crate::kyc::error::KycError;
use crate::kyc::model::{
    self, Address, ApplicationId, CustomerId, Decision, DocumentType, Facts, ScreeningOutcome,
    Status,
};
use crate::kyc::store::{self, ApplicationRow, CustomerRow};
use crate::notify::{NewEvent, Template};
use crate::platform::db::Tx;

/// `POST /v1/customers/{id}/kyc`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// `passport`, `national_id`, `driving_licence` or `residence_permit`.
    pub document_type: String,
    pub document_number: String,
    /// ISO 3166-1 alpha-2 country that issued the document.
    pub document_country: String,
    /// `YYYY-MM-DD`; needed for tier 2.
    pub document_expiry: Option<String>,
    /// 1 (basic, decided by the automated checks) or 2 (full, after a person reviews the
    /// document). Default 1.
    pub requested_tier: Option<u8>,
    /// The customer's address, if not given before; needed for tier 2.
    pub address: Option<Address>,
}

/// What a reviewer decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    #[serde(alias = "approved")]
    Approve,
    #[serde(alias = "rejected")]
    Reject,
}

/// What a customer is told about a rejection: the rule in plain words, never a reviewer's
/// internal notes or a list entry.
fn customer_facing_reason(code: &str) -> String {
    match code {
        "underage" => "You must be at least 18 years old to open an account.".into(),
        "document_number_invalid" => "The document number could not be verified.".into(),
        "document_expired" => "The identity document has expired.".into(),
        _ => "We could not verify your identity.".into(),
    }
}

impl KycService {
    /// Submits (or completes, when awaiting documents) a customer's KYC application and runs
    /// the automated checks; the result is approved, rejected, review or awaiting documents.
    /// Partners submit for their customers; platform admins (documents collected by support)
    /// for any partner's, and then may not decide that application themselves.
    pub async fn submit(
        &self,
        principal: &Principal,
        customer: CustomerId,
        input: Submission,
    ) -> Result<Application, KycError> {
        let document_type = DocumentType::parse(&input.document_type).ok_or_else(|| {
            KycError::validation(
                "document_type",
                "must be passport, national_id, driving_licence or residence_permit",
            )
        })?;
        let number = model::normalise_document_number(&input.document_number);
        if number.is_empty() || number.chars().count() > 40 {
            return Err(KycError::validation(
                "document_number",
                "must be 1-40 characters",
            ));
        }
        let document_country =
            model::validate_country("document_country", &input.document_country)?;
        let document_expiry = input
            .document_expiry
            .as_deref()
            .map(|d| model::parse_date("document_expiry", d))
            .transpose()?;
        let requested_tier = input.requested_tier.unwrap_or(1);
        if !(1..=2).contains(&requested_tier) {
            return Err(KycError::validation("requested_tier", "must be 1 or 2"));
        }
        let address = input.address.map(Address::validated).transpose()?;
        let actor = principal.actor.id();
        let scope = principal.partner_id;

        // Screening runs before the transaction, off the async threads: against a full list it
        // takes milliseconds of CPU, and no row lock should wait for it. The screened facts
        // (name, date of birth, country) cannot change: customers have no update route.
        let (full_name, dob, country) = {
            let mut conn = self.db().conn().await?;
            let row = store::find_customer(&mut conn, customer.uuid())
                .await?
                .filter(|r| scope.is_none_or(|p| r.partner_id == p.uuid()))
                .ok_or(KycError::NotFound("customer"))?;
            let (full_name, dob) = self.identity(&row)?;
            (full_name, dob, row.country)
        };
        let lists = self.loaded_lists().await?;
        let screening = self
            .screen_off_thread(lists, full_name, Some(dob), country)
            .await?;

        let application = self
            .db()
            .in_tx(|tx| {
                let (number, document_country, address, screening, actor) = (
                    number.clone(),
                    document_country.clone(),
                    address.clone(),
                    screening.clone(),
                    actor.clone(),
                );
                let this = self.clone();
                Box::pin(async move {
                    this.submit_in(
                        tx,
                        scope,
                        customer,
                        SubmitArgs {
                            document_type,
                            number,
                            document_country,
                            document_expiry,
                            requested_tier,
                            address,
                            screening,
                            actor,
                        },
                    )
                    .await
                })
            })
            .await?;
        self.application_view(application, principal.is_platform_admin())
            .await
    }

    async fn submit_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Option<PartnerId>,
        customer: CustomerId,
        args: SubmitArgs,
    ) -> Result<ApplicationRow, KycError> {
        let now = self.now();
        let vault = self.vault();
        let mut customer_row = store::lock_customer(tx.conn(), customer.uuid())
            .await?
            .filter(|r| scope.is_none_or(|p| r.partner_id == p.uuid()))
            .ok_or(KycError::NotFound("customer"))?;
        let partner = PartnerId::from_uuid(customer_row.partner_id);
        let open = store::open_application(tx.conn(), customer.uuid()).await?;
        if let Some(open) = &open
            && open.status != Status::AwaitingDocuments.as_str()
        {
            return Err(KycError::ApplicationInProgress(format!(
                "{} is {}",
                ApplicationId::from_uuid(open.id),
                open.status
            )));
        }
        if tier_u8(customer_row.kyc_tier) >= args.requested_tier {
            return Err(KycError::validation(
                "requested_tier",
                format!("the customer already has tier {}", customer_row.kyc_tier),
            ));
        }
        if let Some(address) = &args.address {
            customer_row.address_enc = Some(vault.seal(
                &context("address", customer_row.id),
                &serde_json::to_string(address).map_err(|e| KycError::Internal(e.into()))?,
            )?);
        }
        let (_, dob) = self.identity(&customer_row)?;
        let document_hash = vault.hash(
            "document",
            &format!("{}:{}", args.document_type.as_str(), args.number),
        );
        let duplicate_of = store::customer_with_document(
            tx.conn(),
            partner.uuid(),
            &document_hash,
            customer.uuid(),
        )
        .await?
        .map(CustomerId::from_uuid);
        let (screening_outcome, hits) = args.screening;
        let settings = &self.inner.settings;
        let checks = model::run_checks(&Facts {
            today: now.date_naive(),
            requested_tier: args.requested_tier,
            date_of_birth: dob,
            country: &customer_row.country,
            has_address: customer_row.address_enc.is_some(),
            document_type: args.document_type,
            document_number: &args.number,
            document_country: &args.document_country,
            document_expiry: args.document_expiry,
            minimum_age: settings.minimum_age,
            high_risk_countries: &settings.high_risk_countries,
            duplicate_of,
            screening: screening_outcome,
        });
        let decision = model::decide(args.requested_tier, &checks);

        let (mut row, resumed) = match open {
            Some(open) => (open, true),
            None => {
                let id = ApplicationId::new().uuid();
                (
                    ApplicationRow {
                        id,
                        partner_id: partner.uuid(),
                        customer_id: customer.uuid(),
                        status: Status::Pending.as_str().into(),
                        requested_tier: i16::from(args.requested_tier),
                        granted_tier: None,
                        origin: "submission".into(),
                        document_enc: None,
                        document_hash: None,
                        outcome: json!({}),
                        submitted_by: args.actor.clone(),
                        last_actor: args.actor.clone(),
                        created_at: now,
                        updated_at: now,
                        decided_at: None,
                    },
                    false,
                )
            }
        };
        if resumed {
            store::insert_transition(
                tx.conn(),
                row.id,
                Some(Status::AwaitingDocuments.as_str()),
                Status::Pending.as_str(),
                &args.actor,
                "the missing data was sent",
                now,
            )
            .await?;
        } else {
            store::insert_application(tx.conn(), &row).await?;
            store::insert_transition(
                tx.conn(),
                row.id,
                None,
                Status::Pending.as_str(),
                &args.actor,
                "submitted",
                now,
            )
            .await?;
        }
        row.status = Status::Pending.as_str().into();
        row.requested_tier = i16::from(args.requested_tier);
        let document = Document {
            document_type: args.document_type.as_str().into(),
            number: args.number.clone(),
            country: args.document_country.clone(),
            expiry: args.document_expiry,
        };
        row.document_enc = Some(vault.seal(
            &application_context(row.id),
            &serde_json::to_string(&document).map_err(|e| KycError::Internal(e.into()))?,
        )?);
        row.document_hash = Some(document_hash);
        set_outcome(
            &mut row,
            Outcome {
                checks,
                screening: hits,
                ..Outcome::default()
            },
        )?;
        row.last_actor = args.actor.clone();
        self.apply_decision(tx, &mut row, &mut customer_row, &decision, now)
            .await?;
        Ok(row)
    }

    /// Moves an application to the automated decision, records the transition, updates the
    /// customer, and announces it (event, email).
    async fn apply_decision(
        &self,
        tx: &mut Tx<'_>,
        row: &mut ApplicationRow,
        customer: &mut CustomerRow,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<(), KycError> {
        let from = Status::parse(&row.status).unwrap_or(Status::Pending);
        if !from.can_become(decision.status) {
            return Err(KycError::Internal(anyhow::anyhow!(
                "no transition from {} to {}",
                from.as_str(),
                decision.status.as_str()
            )));
        }
        row.status = decision.status.as_str().into();
        row.granted_tier = decision.granted_tier.map(i16::from);
        let mut outcome = outcome_of(row);
        outcome.missing = decision.missing.clone();
        outcome.code = Some(decision.code.clone());
        outcome.reason = Some(decision.reason.clone());
        set_outcome(row, outcome)?;
        row.updated_at = now;
        if matches!(decision.status, Status::Approved | Status::Rejected) {
            row.decided_at = Some(now);
        }
        store::update_application(tx.conn(), row).await?;
        store::insert_transition(
            tx.conn(),
            row.id,
            Some(from.as_str()),
            decision.status.as_str(),
            &format!("system:{}", decision.code),
            &decision.reason,
            now,
        )
        .await?;
        self.update_customer_after(tx, row, customer, decision.status, now)
            .await
    }

    pub(super) async fn update_customer_after(
        &self,
        tx: &mut Tx<'_>,
        row: &ApplicationRow,
        customer: &mut CustomerRow,
        status: Status,
        now: DateTime<Utc>,
    ) -> Result<(), KycError> {
        customer.kyc_status = status.as_str().into();
        if let (Status::Approved, Some(granted)) = (status, row.granted_tier) {
            customer.kyc_tier = customer.kyc_tier.max(granted);
        }
        customer.updated_at = now;
        store::update_customer(tx.conn(), customer).await?;
        let outcome = outcome_of(row);
        let event_type = match status {
            Status::Approved => "kyc.approved",
            Status::Rejected => "kyc.rejected",
            Status::Review => "kyc.review",
            Status::Pending | Status::AwaitingDocuments => "kyc.awaiting_documents",
        };
        if status == Status::Pending {
            return Ok(());
        }
        self.outbox()
            .record_event(
                tx,
                NewEvent {
                    partner_id: Some(PartnerId::from_uuid(row.partner_id)),
                    event_type: event_type.into(),
                    data: json!({
                        "application_id": ApplicationId::from_uuid(row.id),
                        "customer_id": CustomerId::from_uuid(row.customer_id),
                        "status": status.as_str(),
                        "kyc_tier": customer.kyc_tier,
                        "code": outcome.code,
                        "missing": outcome.missing,
                    }),
                },
            )
            .await?;
        if let Some(email_enc) = &customer.email_enc
            && matches!(status, Status::Approved | Status::Rejected | Status::Review)
        {
            let vault = self.vault();
            let email = vault.open(&context("email", customer.id), email_enc)?;
            let name = vault.open(
                &context("first_name", customer.id),
                &customer.first_name_enc,
            )?;
            let template = Template::KycDecision {
                customer_name: name,
                decision: status.as_str().into(),
                tier: (status == Status::Approved).then(|| tier_u8(customer.kyc_tier)),
                reason: (status == Status::Rejected)
                    .then(|| customer_facing_reason(outcome.code.as_deref().unwrap_or(""))),
            };
            self.outbox().enqueue_email(tx, &email, template).await?;
        }
        Ok(())
    }

    /// A reviewer's decision on an application in review. Four eyes: the reviewer is neither
    /// who submitted it nor who last changed it.
    pub async fn review(
        &self,
        reviewer: &Principal,
        id: ApplicationId,
        decision: ReviewDecision,
        reason: &str,
    ) -> Result<Application, KycError> {
        if !reviewer.is_platform_admin() {
            return Err(KycError::Forbidden(
                "Only platform admins decide KYC applications.".into(),
            ));
        }
        let reason = reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > 1000 {
            return Err(KycError::validation("reason", "must be 1-1000 characters"));
        }
        let actor = reviewer.actor.id();
        let row = self
            .db()
            .in_tx(|tx| {
                let (actor, reason) = (actor.clone(), reason.clone());
                let this = self.clone();
                Box::pin(async move { this.review_in(tx, id, decision, &actor, &reason).await })
            })
            .await?;
        self.application_view(row, true).await
    }

    async fn review_in(
        &self,
        tx: &mut Tx<'_>,
        id: ApplicationId,
        decision: ReviewDecision,
        actor: &str,
        reason: &str,
    ) -> Result<ApplicationRow, KycError> {
        let now = self.now();
        let mut row = store::lock_application(tx.conn(), id.uuid())
            .await?
            .ok_or(KycError::NotFound("application"))?;
        if row.status != Status::Review.as_str() {
            return Err(KycError::NotInReview(row.status));
        }
        if row.submitted_by == actor {
            return Err(KycError::FourEyes(
                "the reviewer submitted this application; another person must decide it".into(),
            ));
        }
        if row.last_actor == actor {
            return Err(KycError::FourEyes(
                "the reviewer last changed this application; another person must decide it".into(),
            ));
        }
        let mut customer = store::lock_customer(tx.conn(), row.customer_id)
            .await?
            .ok_or(KycError::NotFound("customer"))?;
        let (status, code) = match decision {
            ReviewDecision::Approve => (Status::Approved, "manual_approval"),
            ReviewDecision::Reject => (Status::Rejected, "manual_rejection"),
        };
        row.status = status.as_str().into();
        row.granted_tier = (status == Status::Approved).then_some(row.requested_tier);
        let mut outcome = outcome_of(&row);
        outcome.code = Some(code.into());
        outcome.reason = Some(reason.into());
        set_outcome(&mut row, outcome)?;
        row.last_actor = actor.into();
        row.updated_at = now;
        row.decided_at = Some(now);
        store::update_application(tx.conn(), &row).await?;
        store::insert_transition(
            tx.conn(),
            row.id,
            Some(Status::Review.as_str()),
            status.as_str(),
            actor,
            reason,
            now,
        )
        .await?;
        self.update_customer_after(tx, &row, &mut customer, status, now)
            .await?;
        Ok(row)
    }
}

struct SubmitArgs {
    document_type: DocumentType,
    number: String,
    document_country: String,
    document_expiry: Option<NaiveDate>,
    requested_tier: u8,
    address: Option<Address>,
    screening: (ScreeningOutcome, Vec<ScreeningHit>),
    actor: String,
}
