//! Customers: opening one (personal data sealed before it reaches the database), reading and
//! listing them, and decrypting a stored customer for a response or for the checks.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{KycService, context, tier_u8};
use crate::kernel::{PartnerId, Principal};
use crate::kyc::error::KycError;
use crate::kyc::model::{self, Address, CustomerId};
use crate::kyc::store::{self, CustomerRow};
use crate::platform::http::pagination::Page;

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

impl KycService {
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

    /// The customer's full name and date of birth, decrypted for screening and the checks.
    pub(super) fn identity(&self, row: &CustomerRow) -> Result<(String, NaiveDate), KycError> {
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
}
