//! The KYC service: customers (personal data sealed by the [`Vault`]), applications through
//! the automated checks and manual review, sanctions lists and re-screening, and the
//! [`Compliance`](super::Compliance) decisions other modules ask for before moving money.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Digest;
use tokio::sync::RwLock;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::KycError;
use super::model::{
    self, Address, ApplicationId, Check, CheckName, CustomerId, Decision, Denial, DocumentType,
    Facts, Movement, ScreeningOutcome, Status, Usage,
};
use super::pii::Vault;
use super::screening::{self, BirthDate, ListEntry, ScreeningIndex, ScreeningSettings, Subject};
use super::settings::{KycSettings, TierSettings};
use super::store::{self, ApplicationRow, CustomerRow, EntryRow, UsageRow};
use crate::kernel::{PartnerId, Principal};
use crate::notify::{NewEvent, Template, enqueue_email, record_event};
use crate::platform::db::{Db, Tx};
use crate::platform::http::pagination::Page;
use crate::platform::money::Money;

/// The time source; tests pass a fake one.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A customer as partners see it: personal data decrypted for the response only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Customer {
    #[schema(value_type = String, example = "cus_01h455vb4pex5vsknk084sn02q")]
    pub id: CustomerId,
    #[schema(value_type = String)]
    pub partner_id: PartnerId,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    /// `YYYY-MM-DD`.
    pub date_of_birth: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub address: Option<Address>,
    /// The state of the latest KYC application: `none`, `pending`, `awaiting_documents`,
    /// `approved`, `rejected` or `review`.
    pub kyc_status: String,
    /// What the customer may do now: 0 none, 1 basic, 2 full.
    pub kyc_tier: u8,
    pub created: DateTime<Utc>,
}

/// `POST /v1/customers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// The partner's own reference, unique per partner.
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    /// `YYYY-MM-DD`, not in the future.
    pub date_of_birth: String,
    /// ISO 3166-1 alpha-2 country of residence, e.g. `DE`.
    pub country: String,
    pub address: Option<Address>,
}

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

/// A sanctions candidate, as shown to reviewers (platform admins).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScreeningHit {
    pub list: String,
    pub reference: String,
    /// The entry's primary name, and the name or alias that matched.
    pub entry_name: String,
    pub matched_name: String,
    pub score: f64,
    pub name_score: f64,
    pub reasons: Vec<String>,
    pub date_of_birth: Option<String>,
    pub country: Option<String>,
    pub program: Option<String>,
    pub kind: String,
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

/// What a reviewer decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    #[serde(alias = "approved")]
    Approve,
    #[serde(alias = "rejected")]
    Reject,
}

/// A loaded sanctions list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SanctionsList {
    pub name: String,
    pub version: i64,
    pub format: String,
    pub entries: i32,
    pub sha256: String,
    pub loaded_at: DateTime<Utc>,
}

/// What a re-screening did.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Rescreening {
    pub screened: usize,
    pub flagged: usize,
    /// Customers with an application already open, left to it.
    pub skipped: usize,
}

/// One tier as partners read it (`GET /v1/kyc/tiers`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierView {
    pub tier: u8,
    pub name: String,
    pub outgoing: bool,
    pub withdrawals: bool,
    pub cards: bool,
    pub limits: Vec<TierLimitsView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierLimitsView {
    pub currency: String,
    pub max_balance: String,
    pub max_single_payment: String,
    pub daily_outgoing: String,
    pub monthly_outgoing: String,
}

struct LoadedLists {
    version: i64,
    index: ScreeningIndex,
    /// The list of each entry, by index.
    list_of: Vec<String>,
}

struct Inner {
    db: Db,
    vault: Vault,
    settings: KycSettings,
    clock: Clock,
    lists: RwLock<Option<Arc<LoadedLists>>>,
}

/// Customers, KYC and compliance. Cheap to clone.
#[derive(Clone)]
pub struct KycService {
    inner: Arc<Inner>,
}

fn context(field: &str, id: Uuid) -> String {
    format!("customer.{field}:{id}")
}

fn application_context(id: Uuid) -> String {
    format!("application.document:{id}")
}

fn tier_u8(tier: i16) -> u8 {
    u8::try_from(tier).unwrap_or(0)
}

fn birth_date_text(date: BirthDate) -> String {
    match date {
        BirthDate::Full(d) => d.format("%Y-%m-%d").to_string(),
        BirthDate::Year(y) => format!("{y:04}"),
    }
}

fn parse_birth_date(text: &str) -> Option<BirthDate> {
    if text.len() == 4 {
        text.parse().ok().map(BirthDate::Year)
    } else {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(BirthDate::Full)
    }
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
    pub fn new(db: Db, settings: &KycSettings, clock: Clock) -> Result<KycService, KycError> {
        Ok(KycService {
            inner: Arc::new(Inner {
                db,
                vault: Vault::new(settings)?,
                settings: settings.clone(),
                clock,
                lists: RwLock::new(None),
            }),
        })
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Now, to the microsecond PostgreSQL stores (so a response and a later read agree).
    fn now(&self) -> DateTime<Utc> {
        chrono::SubsecRound::trunc_subsecs((self.inner.clock)(), 6)
    }

    fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// The configured tiers.
    pub fn tiers(&self) -> Vec<TierView> {
        self.inner
            .settings
            .tiers
            .iter()
            .map(|t| TierView {
                tier: t.tier,
                name: match t.tier {
                    0 => "none",
                    1 => "basic",
                    _ => "full",
                }
                .into(),
                outgoing: t.tier >= 1 && !t.limits.is_empty(),
                withdrawals: t.tier >= 1 && t.withdrawals,
                cards: t.tier >= 1 && t.cards,
                limits: t
                    .limits
                    .iter()
                    .map(|l| TierLimitsView {
                        currency: l.max_balance.currency().code().to_owned(),
                        max_balance: l.max_balance.format_amount(),
                        max_single_payment: l.max_single_payment.format_amount(),
                        daily_outgoing: l.daily_outgoing.format_amount(),
                        monthly_outgoing: l.monthly_outgoing.format_amount(),
                    })
                    .collect(),
            })
            .collect()
    }

    // ----- customers -------------------------------------------------------------------------

    /// Opens a customer for `partner`. Personal data is sealed before it reaches the database.
    pub async fn create_customer(
        &self,
        partner: PartnerId,
        input: NewCustomer,
    ) -> Result<Customer, KycError> {
        let today = self.now().date_naive();
        let external_id = input
            .external_id
            .as_deref()
            .map(model::validate_external_id)
            .transpose()?;
        let email = input
            .email
            .as_deref()
            .map(model::normalise_email)
            .transpose()?;
        let first_name = model::validate_name("first_name", &input.first_name)?;
        let last_name = model::validate_name("last_name", &input.last_name)?;
        let dob = model::validate_date_of_birth(&input.date_of_birth, today)?;
        let country = model::validate_country("country", &input.country)?;
        let address = input.address.map(Address::validated).transpose()?;

        let id = CustomerId::new();
        let uuid = id.uuid();
        let vault = self.vault();
        let now = self.now();
        let address_enc = match &address {
            Some(a) => Some(vault.seal(
                &context("address", uuid),
                &serde_json::to_string(a).map_err(|e| KycError::Internal(e.into()))?,
            )?),
            None => None,
        };
        let row = CustomerRow {
            id: uuid,
            partner_id: partner.uuid(),
            external_id,
            email_enc: email
                .as_deref()
                .map(|e| vault.seal(&context("email", uuid), e))
                .transpose()?,
            email_hash: email.as_deref().map(|e| vault.hash("email", e)),
            first_name_enc: vault.seal(&context("first_name", uuid), &first_name)?,
            last_name_enc: vault.seal(&context("last_name", uuid), &last_name)?,
            date_of_birth_enc: vault.seal(
                &context("date_of_birth", uuid),
                &dob.format("%Y-%m-%d").to_string(),
            )?,
            address_enc,
            country,
            kyc_status: "none".into(),
            kyc_tier: 0,
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.db().conn().await?;
        match store::insert_customer(&mut conn, &row).await {
            Ok(()) => {}
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => return Err(KycError::DuplicateExternalId),
            Err(e) => return Err(e.into()),
        }
        self.customer_view(&row)
    }

    /// Decrypts a stored customer for a response.
    fn customer_view(&self, row: &CustomerRow) -> Result<Customer, KycError> {
        let vault = self.vault();
        let open = |field: &str, value: &str| vault.open(&context(field, row.id), value);
        let address = match &row.address_enc {
            Some(sealed) => Some(
                serde_json::from_str(&open("address", sealed)?)
                    .map_err(|e| KycError::Internal(e.into()))?,
            ),
            None => None,
        };
        Ok(Customer {
            id: CustomerId::from_uuid(row.id),
            partner_id: PartnerId::from_uuid(row.partner_id),
            external_id: row.external_id.clone(),
            email: row
                .email_enc
                .as_deref()
                .map(|e| open("email", e))
                .transpose()?,
            first_name: open("first_name", &row.first_name_enc)?,
            last_name: open("last_name", &row.last_name_enc)?,
            date_of_birth: open("date_of_birth", &row.date_of_birth_enc)?,
            country: row.country.clone(),
            address,
            kyc_status: row.kyc_status.clone(),
            kyc_tier: tier_u8(row.kyc_tier),
            created: row.created_at,
        })
    }

    /// A customer the principal may see (another partner's is "no such customer").
    pub async fn customer(
        &self,
        principal: &Principal,
        id: CustomerId,
    ) -> Result<Customer, KycError> {
        let mut conn = self.db().conn().await?;
        let row = store::find_customer(&mut conn, id.uuid())
            .await?
            .filter(|r| principal.can_see_partner(PartnerId::from_uuid(r.partner_id)))
            .ok_or(KycError::NotFound("customer"))?;
        self.customer_view(&row)
    }

    /// Customers, newest first; platform admins see every partner's.
    pub async fn list_customers(
        &self,
        principal: &Principal,
        external_id: Option<&str>,
        email: Option<&str>,
        limit: u32,
        cursor: Option<CustomerId>,
    ) -> Result<Page<Customer>, KycError> {
        let email_hash = email
            .map(|e| model::normalise_email(e).map(|e| self.vault().hash("email", &e)))
            .transpose()?;
        let mut conn = self.db().conn().await?;
        let rows = store::list_customers(
            &mut conn,
            principal.partner_id.map(|p| p.uuid()),
            external_id,
            email_hash.as_deref(),
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let customers = rows
            .iter()
            .map(|r| self.customer_view(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(customers, limit, |c: &Customer| {
            c.id.to_string()
        }))
    }

    /// The customer's tier and status, for other modules (`Compliance::customer_tier`).
    pub(super) async fn tier_in(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
    ) -> Result<(u8, String), KycError> {
        let row = store::share_customer(tx.conn(), customer.uuid())
            .await?
            .filter(|r| r.partner_id == partner.uuid())
            .ok_or(KycError::NotFound("customer"))?;
        Ok((tier_u8(row.kyc_tier), row.kyc_status))
    }

    // ----- applications ------------------------------------------------------------------------

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

    async fn update_customer_after(
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
        record_event(
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
            enqueue_email(tx, &email, template).await?;
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

    async fn application_view(
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

    // ----- sanctions -------------------------------------------------------------------------

    /// Loads (replaces) the list `name` from a file in the OFAC SDN or simple CSV layout.
    pub async fn load_list(&self, name: &str, bytes: &[u8]) -> Result<SanctionsList, KycError> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(KycError::validation(
                "name",
                "a list name is 1-64 letters, digits, '-', '_' or '.'",
            ));
        }
        let entries = screening::parse_list(bytes).map_err(|e| KycError::List(e.to_string()))?;
        if entries.is_empty() {
            return Err(KycError::List("the file holds no entries".into()));
        }
        let format = if screening::is_simple_csv(bytes) {
            "simple"
        } else {
            "ofac_sdn"
        };
        let sha256 = hex(&sha2::Sha256::digest(bytes));
        let rows: Vec<EntryRow> = entries
            .into_iter()
            .map(|e| EntryRow {
                id: 0,
                list_name: name.to_owned(),
                reference: e.reference,
                name: e.name,
                aliases: e.aliases,
                date_of_birth: e.date_of_birth.map(birth_date_text),
                country: e.country,
                program: e.program,
                kind: e.kind,
            })
            .collect();
        let now = self.now();
        let name = name.to_owned();
        let version = self
            .db()
            .in_tx(|tx| {
                let (name, sha256, rows) = (name.clone(), sha256.clone(), rows.clone());
                Box::pin(async move {
                    Ok::<_, KycError>(
                        store::replace_list(tx.conn(), &name, format, &sha256, &rows, now).await?,
                    )
                })
            })
            .await?;
        Ok(SanctionsList {
            name,
            version,
            format: format.into(),
            entries: i32::try_from(rows.len()).unwrap_or(i32::MAX),
            sha256,
            loaded_at: now,
        })
    }

    /// The loaded lists.
    pub async fn lists(&self) -> Result<Vec<SanctionsList>, KycError> {
        let mut conn = self.db().conn().await?;
        Ok(store::lists(&mut conn)
            .await?
            .into_iter()
            .map(|l| SanctionsList {
                name: l.name,
                version: l.version,
                format: l.format,
                entries: l.entries,
                sha256: l.sha256,
                loaded_at: l.loaded_at,
            })
            .collect())
    }

    /// The screening index of every loaded list, rebuilt only when a list changed.
    async fn loaded_lists(&self) -> Result<Option<Arc<LoadedLists>>, KycError> {
        let mut conn = self.db().conn().await?;
        let version = store::lists_version(&mut conn).await?;
        if version == 0 {
            return Ok(None);
        }
        if let Some(cached) = self.inner.lists.read().await.as_ref()
            && cached.version == version
        {
            return Ok(Some(cached.clone()));
        }
        let rows = store::all_entries(&mut conn).await?;
        let list_of = rows.iter().map(|r| r.list_name.clone()).collect();
        let entries = rows
            .into_iter()
            .map(|r| ListEntry {
                reference: r.reference,
                name: r.name,
                aliases: r.aliases,
                date_of_birth: r.date_of_birth.as_deref().and_then(parse_birth_date),
                country: r.country,
                program: r.program,
                kind: r.kind,
            })
            .collect();
        // Preparing every name of a full list is CPU work: off the async threads.
        let index = tokio::task::spawn_blocking(move || ScreeningIndex::new(entries))
            .await
            .map_err(|e| KycError::Internal(anyhow::anyhow!("building the index failed: {e}")))?;
        let loaded = Arc::new(LoadedLists {
            version,
            index,
            list_of,
        });
        *self.inner.lists.write().await = Some(loaded.clone());
        Ok(Some(loaded))
    }

    fn screening_settings(&self) -> ScreeningSettings {
        ScreeningSettings {
            threshold: self.inner.settings.sanctions_threshold,
            candidate_floor: self.inner.settings.sanctions_candidate_floor,
        }
    }

    /// The customer's full name and date of birth, decrypted for screening and the checks.
    fn identity(&self, row: &CustomerRow) -> Result<(String, NaiveDate), KycError> {
        let vault = self.vault();
        let open = |field: &str, value: &str| vault.open(&context(field, row.id), value);
        let dob = open("date_of_birth", &row.date_of_birth_enc)?;
        let dob = NaiveDate::parse_from_str(&dob, "%Y-%m-%d")
            .map_err(|e| KycError::Internal(e.into()))?;
        let name = format!(
            "{} {}",
            open("first_name", &row.first_name_enc)?,
            open("last_name", &row.last_name_enc)?
        );
        Ok((name, dob))
    }

    /// [`Self::screen`] on a blocking thread.
    async fn screen_off_thread(
        &self,
        lists: Option<Arc<LoadedLists>>,
        full_name: String,
        date_of_birth: Option<NaiveDate>,
        country: String,
    ) -> Result<(ScreeningOutcome, Vec<ScreeningHit>), KycError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.screen(&lists, &full_name, date_of_birth, Some(&country))
        })
        .await
        .map_err(|e| KycError::Internal(anyhow::anyhow!("the screening task failed: {e}")))
    }

    /// Screens one person: the outcome for the checks and the candidates for reviewers.
    fn screen(
        &self,
        lists: &Option<Arc<LoadedLists>>,
        full_name: &str,
        date_of_birth: Option<NaiveDate>,
        country: Option<&str>,
    ) -> (ScreeningOutcome, Vec<ScreeningHit>) {
        let Some(lists) = lists.as_ref().filter(|l| !l.index.is_empty()) else {
            return (ScreeningOutcome::NoList, Vec::new());
        };
        let settings = self.screening_settings();
        let matches = lists.index.screen(
            &Subject {
                full_name,
                date_of_birth,
                country,
            },
            &settings,
            5,
        );
        let entries = lists.index.entries();
        let hits: Vec<ScreeningHit> = matches
            .iter()
            .filter_map(|m| {
                let entry = entries.get(m.entry_index)?;
                Some(ScreeningHit {
                    list: lists
                        .list_of
                        .get(m.entry_index)
                        .cloned()
                        .unwrap_or_default(),
                    reference: entry.reference.clone(),
                    entry_name: entry.name.clone(),
                    matched_name: m.matched_name.clone(),
                    score: m.score,
                    name_score: m.name_score,
                    reasons: m.reasons.clone(),
                    date_of_birth: entry.date_of_birth.map(birth_date_text),
                    country: entry.country.clone(),
                    program: entry.program.clone(),
                    kind: entry.kind.clone(),
                })
            })
            .collect();
        let outcome = match matches.first() {
            Some(best) if screening::is_strong(best, &settings) => {
                let hit = hits.first();
                ScreeningOutcome::Strong {
                    name: hit.map(|h| h.entry_name.clone()).unwrap_or_default(),
                    score: best.score,
                    list: hit.map(|h| h.list.clone()).unwrap_or_default(),
                    reference: hit.map(|h| h.reference.clone()).unwrap_or_default(),
                }
            }
            best => ScreeningOutcome::Clear {
                screened: lists.index.len(),
                best: best.map(|m| m.score),
            },
        };
        (outcome, hits)
    }

    /// Screens every customer holding a tier again (after a list load). A strong match opens
    /// a `rescreening` application in review and suspends the customer to tier 0 until a
    /// reviewer decides; approval restores the tier.
    pub async fn rescreen(&self) -> Result<Rescreening, KycError> {
        let lists = self.loaded_lists().await?;
        let mut result = Rescreening {
            screened: 0,
            flagged: 0,
            skipped: 0,
        };
        if lists.is_none() {
            return Err(KycError::List("no sanctions list is loaded".into()));
        }
        let mut after = None;
        loop {
            let batch = {
                let mut conn = self.db().conn().await?;
                store::approved_customers(&mut conn, after, 500).await?
            };
            let Some(last) = batch.last() else { break };
            after = Some(last.id);
            for customer in batch {
                let (name, dob) = self.identity(&customer)?;
                let (outcome, hits) = self
                    .screen_off_thread(lists.clone(), name, Some(dob), customer.country.clone())
                    .await?;
                result.screened += 1;
                let ScreeningOutcome::Strong { .. } = outcome else {
                    continue;
                };
                let checks = model::run_checks_sanctions_only(&outcome);
                let flagged = self
                    .db()
                    .in_tx(|tx| {
                        let (checks, hits) = (checks.clone(), hits.clone());
                        let this = self.clone();
                        let id = customer.id;
                        Box::pin(async move { this.flag_in(tx, id, checks, hits).await })
                    })
                    .await?;
                if flagged {
                    result.flagged += 1;
                } else {
                    result.skipped += 1;
                }
            }
        }
        Ok(result)
    }

    async fn flag_in(
        &self,
        tx: &mut Tx<'_>,
        customer: Uuid,
        checks: Vec<Check>,
        hits: Vec<ScreeningHit>,
    ) -> Result<bool, KycError> {
        let now = self.now();
        let Some(mut customer) = store::lock_customer(tx.conn(), customer).await? else {
            return Ok(false);
        };
        if customer.kyc_tier == 0
            || store::open_application(tx.conn(), customer.id)
                .await?
                .is_some()
        {
            return Ok(false);
        }
        let actor = "system:sanctions_rescreening";
        let reason = checks
            .iter()
            .find(|c| c.name == CheckName::Sanctions)
            .map(|c| c.detail.clone())
            .unwrap_or_default();
        let row = ApplicationRow {
            id: ApplicationId::new().uuid(),
            partner_id: customer.partner_id,
            customer_id: customer.id,
            status: Status::Review.as_str().into(),
            requested_tier: customer.kyc_tier,
            granted_tier: None,
            origin: "rescreening".into(),
            document_enc: None,
            document_hash: None,
            outcome: serde_json::to_value(Outcome {
                checks,
                screening: hits,
                missing: Vec::new(),
                code: Some("sanctions_match".into()),
                reason: Some(reason.clone()),
            })
            .map_err(|e| KycError::Internal(e.into()))?,
            submitted_by: actor.into(),
            last_actor: actor.into(),
            created_at: now,
            updated_at: now,
            decided_at: None,
        };
        store::insert_application(tx.conn(), &row).await?;
        store::insert_transition(
            tx.conn(),
            row.id,
            None,
            Status::Review.as_str(),
            actor,
            &format!("suspended to tier 0 until reviewed: {reason}"),
            now,
        )
        .await?;
        customer.kyc_tier = 0;
        self.update_customer_after(tx, &row, &mut customer, Status::Review, now)
            .await?;
        Ok(true)
    }

    // ----- key rotation ------------------------------------------------------------------------

    /// Re-encrypts every personal-data value sealed under a key other than the active one.
    /// Returns how many rows changed.
    pub async fn reencrypt(&self) -> Result<usize, KycError> {
        let mut changed = 0;
        let vault = self.vault().clone();
        let reseal = |ctx: &str, value: &mut String| -> Result<bool, KycError> {
            if !vault.is_stale(value) {
                return Ok(false);
            }
            let plain = vault.open(ctx, value)?;
            *value = vault.seal(ctx, &plain)?;
            Ok(true)
        };
        let mut after = None;
        loop {
            let mut conn = self.db().conn().await?;
            let batch = store::customers_after(&mut conn, after, 500).await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.id);
            for mut row in batch {
                let id = row.id;
                let mut touched = false;
                touched |= reseal(&context("first_name", id), &mut row.first_name_enc)?;
                touched |= reseal(&context("last_name", id), &mut row.last_name_enc)?;
                touched |= reseal(&context("date_of_birth", id), &mut row.date_of_birth_enc)?;
                if let Some(v) = row.email_enc.as_mut() {
                    touched |= reseal(&context("email", id), v)?;
                }
                if let Some(v) = row.address_enc.as_mut() {
                    touched |= reseal(&context("address", id), v)?;
                }
                if touched {
                    store::update_customer(&mut conn, &row).await?;
                    changed += 1;
                }
            }
        }
        let mut after = None;
        loop {
            let mut conn = self.db().conn().await?;
            let batch = store::applications_after(&mut conn, after, 500).await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.id);
            for mut row in batch {
                let ctx = application_context(row.id);
                if let Some(v) = row.document_enc.as_mut()
                    && reseal(&ctx, v)?
                {
                    store::update_application(&mut conn, &row).await?;
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    // ----- compliance --------------------------------------------------------------------------

    /// See [`Compliance::authorize`](super::Compliance::authorize).
    pub(super) async fn authorize_in(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        movement: &Movement,
    ) -> Result<(), KycError> {
        self.authorize_all_in(tx, &[(partner, *movement)])
            .await?
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }

    /// See [`Compliance::authorize_all`](super::Compliance::authorize_all): three statements
    /// whatever the number of movements (customers, counters, counters' new values).
    pub(super) async fn authorize_all_in(
        &self,
        tx: &mut Tx<'_>,
        movements: &[(PartnerId, Movement)],
    ) -> Result<Vec<Result<(), KycError>>, KycError> {
        if movements.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let today = now.date_naive();
        let mut ids: Vec<Uuid> = movements
            .iter()
            .map(|(_, m)| m.customer_id.uuid())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // Every paying customer's counters, locked (created when missing) in key order: all
        // of them, whoever's they are; a movement refused below leaves its row unchanged.
        let mut keys: Vec<(Uuid, &str)> = movements
            .iter()
            .filter(|(_, m)| matches!(m.direction, model::Direction::Outgoing(_)))
            .map(|(_, m)| (m.customer_id.uuid(), m.amount.currency().code()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let empty = Usage::empty(today);
        let wanted: Vec<UsageRow> = keys
            .iter()
            .map(|(customer, currency)| usage_row(*customer, currency, empty))
            .collect();
        // The customers and the counters in one round trip.
        let shared: &Tx<'_> = tx;
        let (customers, counters) = futures_util::future::join(
            store::share_customers(shared.shared(), &ids),
            store::lock_usages(shared.shared(), &wanted),
        )
        .await;
        let customers: HashMap<Uuid, CustomerRow> =
            customers?.into_iter().map(|row| (row.id, row)).collect();
        let customer_of = |partner: PartnerId, m: &Movement| {
            customers
                .get(&m.customer_id.uuid())
                .filter(|c| c.partner_id == partner.uuid())
        };
        let mut usage: HashMap<(Uuid, String), Usage> = counters?
            .into_iter()
            .map(|row| {
                let counted = Usage {
                    day: row.day,
                    day_total: row.day_total,
                    month: row.month,
                    month_total: row.month_total,
                };
                ((row.customer_id, row.currency), counted)
            })
            .collect();
        // In order, as one movement after another: a customer's second payment counts after
        // their first; a refused movement counts nothing.
        let tiers = &self.inner.settings.tiers;
        let mut changed: BTreeSet<(Uuid, String)> = BTreeSet::new();
        let answers = movements
            .iter()
            .map(|(partner, m)| {
                let customer = customer_of(*partner, m).ok_or(KycError::NotFound("customer"))?;
                let tier = tier_u8(customer.kyc_tier);
                if let model::Direction::Incoming = m.direction {
                    model::evaluate(tiers, tier, m, empty, now).map_err(KycError::Denied)?;
                    return Ok(());
                }
                let key = (customer.id, m.amount.currency().code().to_owned());
                let before = usage.get(&key).copied().ok_or_else(|| {
                    KycError::Internal(anyhow::anyhow!("limit counters were not locked"))
                })?;
                let after =
                    model::evaluate(tiers, tier, m, before, now).map_err(KycError::Denied)?;
                if after != before {
                    usage.insert(key.clone(), after);
                    changed.insert(key);
                }
                Ok(())
            })
            .collect();
        let rows: Vec<UsageRow> = changed
            .iter()
            .filter_map(|key| {
                usage
                    .get(key)
                    .map(|counted| usage_row(key.0, &key.1, *counted))
            })
            .collect();
        store::save_usages(tx.conn(), &rows).await?;
        Ok(answers)
    }

    /// See [`Compliance::release`](super::Compliance::release).
    pub(super) async fn release_in(
        &self,
        tx: &mut Tx<'_>,
        customer: CustomerId,
        amount: Money,
        counted_at: DateTime<Utc>,
    ) -> Result<(), KycError> {
        let now = self.now();
        let currency = amount.currency().code();
        let usage = locked_usage(tx, customer.uuid(), currency, now).await?;
        let released = model::release(usage, amount, counted_at, now);
        store::save_usage(tx.conn(), &usage_row(customer.uuid(), currency, released)).await?;
        Ok(())
    }

    /// The tier settings, for the Compliance face.
    pub fn tier_settings(&self) -> &[TierSettings] {
        &self.inner.settings.tiers
    }
}

/// The customer's counted usage in `currency`, locked for the rest of the transaction.
async fn locked_usage(
    tx: &mut Tx<'_>,
    customer: Uuid,
    currency: &str,
    now: DateTime<Utc>,
) -> Result<Usage, KycError> {
    let today = now.date_naive();
    let stored = store::lock_usage(
        tx.conn(),
        customer,
        currency,
        today,
        Usage::empty(today).month,
    )
    .await?;
    Ok(Usage {
        day: stored.day,
        day_total: stored.day_total,
        month: stored.month,
        month_total: stored.month_total,
    })
}

fn usage_row(customer: Uuid, currency: &str, usage: Usage) -> UsageRow {
    UsageRow {
        customer_id: customer,
        currency: currency.to_owned(),
        day: usage.day,
        day_total: usage.day_total,
        month: usage.month,
        month_total: usage.month_total,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identity document of an application, sealed as one value.
#[derive(Serialize, Deserialize)]
struct Document {
    #[serde(rename = "type")]
    document_type: String,
    number: String,
    country: String,
    expiry: Option<NaiveDate>,
}

/// What the checks found and decided, stored as the application's `outcome`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Outcome {
    #[serde(default)]
    checks: Vec<Check>,
    #[serde(default)]
    screening: Vec<ScreeningHit>,
    #[serde(default)]
    missing: Vec<String>,
    code: Option<String>,
    reason: Option<String>,
}

fn outcome_of(row: &ApplicationRow) -> Outcome {
    serde_json::from_value(row.outcome.clone()).unwrap_or_default()
}

fn set_outcome(row: &mut ApplicationRow, outcome: Outcome) -> Result<(), KycError> {
    row.outcome = serde_json::to_value(outcome).map_err(|e| KycError::Internal(e.into()))?;
    Ok(())
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

impl From<Denial> for KycError {
    fn from(d: Denial) -> Self {
        KycError::Denied(d)
    }
}
