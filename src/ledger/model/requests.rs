//! The ledger API's request bodies and their validation into [`NewTransfer`]s and
//! [`NewAccount`]s, unit-testable without HTTP.

use super::*;

// ----- requests ---------------------------------------------------------------------------------
//
// What a partner sends to the ledger's routes, and its validation: a request either parses into
// what the service takes, or names its first malformed field (400 `validation_failed`, or a
// money code for a malformed amount).

/// Largest metadata document kept with an account or transfer (serialised bytes).
pub const MAX_METADATA_BYTES: usize = 4096;

/// Metadata is a JSON object of bounded size that PostgreSQL can store.
pub fn check_metadata(metadata: Option<&serde_json::Value>) -> Result<(), LedgerError> {
    match metadata {
        None => Ok(()),
        Some(value @ serde_json::Value::Object(_)) => {
            if let Err((field, message)) = crate::platform::http::check_storable(value) {
                return Err(LedgerError::validation(
                    "metadata",
                    format!("{field}: {message}"),
                ));
            }
            let size = serde_json::to_vec(value)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                Err(LedgerError::validation(
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes"),
                ))
            } else {
                Ok(())
            }
        }
        Some(_) => Err(LedgerError::validation("metadata", "must be a JSON object")),
    }
}

/// Most transfers one request may carry (TigerBeetle's batch limit).
pub const MAX_TRANSFERS_PER_REQUEST: usize = 8190;

/// The body of `POST /v1/ledger/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// ISO 4217 code; each currency is its own ledger.
    #[schema(value_type = String, example = "USD")]
    currency: Currency,
    /// A number of your choosing that says what the account is for (0-65535).
    code: Option<i32>,
    /// Any of `debits_must_not_exceed_credits`, `credits_must_not_exceed_debits`, `history`.
    flags: Option<Vec<String>>,
    /// A JSON object of at most 4 KiB.
    metadata: Option<serde_json::Value>,
}

impl CreateAccount {
    /// The account to create, or the first malformed field.
    pub fn parse(self) -> Result<NewAccount, LedgerError> {
        let code = transfer_code(self.code, "code")?;
        let flags = AccountFlags::parse(self.flags.as_deref().unwrap_or_default())
            .map_err(|m| LedgerError::validation("flags", m))?;
        check_metadata(self.metadata.as_ref())?;
        Ok(NewAccount {
            id: None,
            currency: self.currency,
            code,
            flags,
            metadata: self.metadata,
        })
    }
}

/// One transfer of a request. Amounts are decimal strings (or exact JSON numbers) in the
/// currency's units.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferInput {
    /// `xfer_...`, chosen by the client: the idempotency key. Generated when absent.
    id: Option<String>,
    /// Required, except for post/void (taken from the pending transfer).
    debit_account_id: Option<String>,
    credit_account_id: Option<String>,
    /// Required and positive, except for post (absent: the full pending amount) and void.
    amount: Option<Amount>,
    /// Required when an amount is given.
    #[schema(value_type = Option<String>, example = "USD")]
    currency: Option<Currency>,
    /// A number of your choosing (0-65535).
    code: Option<i32>,
    /// Reserve the amount (two-phase); post or void it later.
    #[serde(default)]
    pending: bool,
    /// Seconds after which an unresolved pending transfer is voided.
    timeout_secs: Option<u32>,
    /// Post this pending transfer (the amount, if given, may be less: the rest is released).
    post_pending_id: Option<String>,
    /// Void this pending transfer.
    void_pending_id: Option<String>,
    /// Succeeds or fails together with the next transfer of the request.
    #[serde(default)]
    linked: bool,
    /// Move at most what the debit account's constraint allows.
    #[serde(default)]
    balancing_debit: bool,
    /// Move at most what the credit account's constraint allows.
    #[serde(default)]
    balancing_credit: bool,
    /// A JSON object of at most 4 KiB.
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfers {
    /// 1 to 8190 transfers, applied in order.
    transfers: Vec<TransferInput>,
}

impl CreateTransfers {
    /// The transfers, in order, or the first malformed field (`transfers[3].amount`).
    pub fn parse(self) -> Result<Vec<NewTransfer>, LedgerError> {
        if self.transfers.is_empty() || self.transfers.len() > MAX_TRANSFERS_PER_REQUEST {
            return Err(LedgerError::validation(
                "transfers",
                format!("must hold 1 to {MAX_TRANSFERS_PER_REQUEST} transfers"),
            ));
        }
        self.transfers
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.parse(i))
            .collect()
    }
}

impl TransferInput {
    /// The transfer at `index` of its request, or its first malformed field.
    fn parse(self, index: usize) -> Result<NewTransfer, LedgerError> {
        let field = |name: &str| format!("transfers[{index}].{name}");
        let invalid = |name: &str, message: String| LedgerError::validation(field(name), message);
        let id = match self.id {
            Some(raw) => raw
                .parse::<TransferId>()
                .map_err(|e| invalid("id", e.to_string()))?,
            None => TransferId::new(),
        };
        let account = |raw: Option<String>, name: &str| -> Result<Option<AccountId>, LedgerError> {
            raw.map(|r| {
                r.parse::<AccountId>()
                    .map_err(|e| invalid(name, e.to_string()))
            })
            .transpose()
        };
        let debit_account_id = account(self.debit_account_id, "debit_account_id")?;
        let credit_account_id = account(self.credit_account_id, "credit_account_id")?;
        let pending_ref =
            |raw: Option<String>, name: &str| -> Result<Option<TransferId>, LedgerError> {
                raw.map(|r| {
                    r.parse::<TransferId>()
                        .map_err(|e| invalid(name, e.to_string()))
                })
                .transpose()
            };
        let post = pending_ref(self.post_pending_id, "post_pending_id")?;
        let void = pending_ref(self.void_pending_id, "void_pending_id")?;
        let mut flags = TransferFlags::empty();
        let pending_id = match (post, void) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "post_pending_id",
                    "post_pending_id and void_pending_id exclude each other".to_owned(),
                ));
            }
            (Some(p), None) => {
                flags |= TransferFlags::POST_PENDING;
                Some(p)
            }
            (None, Some(v)) => {
                flags |= TransferFlags::VOID_PENDING;
                Some(v)
            }
            (None, None) => None,
        };
        for (set, bit) in [
            (self.pending, TransferFlags::PENDING),
            (self.linked, TransferFlags::LINKED),
            (self.balancing_debit, TransferFlags::BALANCING_DEBIT),
            (self.balancing_credit, TransferFlags::BALANCING_CREDIT),
        ] {
            if set {
                flags |= bit;
            }
        }
        let resolves = pending_id.is_some();
        let amount = match (&self.amount, self.currency) {
            (Some(amount), Some(currency)) => Money::parse_positive(amount, currency)
                .map_err(|e| FieldError::amount(field("amount"), &e))?
                .minor(),
            (Some(_), None) => {
                return Err(invalid("currency", "is required with an amount".to_owned()));
            }
            (None, _) if resolves => 0,
            (None, _) => return Err(invalid("amount", "is required".to_owned())),
        };
        if !resolves && self.currency.is_none() {
            return Err(invalid("currency", "is required".to_owned()));
        }
        if !resolves && (debit_account_id.is_none() || credit_account_id.is_none()) {
            let missing = if debit_account_id.is_none() {
                "debit_account_id"
            } else {
                "credit_account_id"
            };
            return Err(invalid(missing, "is required".to_owned()));
        }
        let code = transfer_code(self.code, &field("code"))?;
        check_metadata(self.metadata.as_ref()).map_err(|e| match e {
            LedgerError::Validation(e) => invalid("metadata", e.message),
            other => other,
        })?;
        Ok(NewTransfer {
            id,
            debit_account_id,
            credit_account_id,
            amount,
            currency: self.currency,
            code,
            flags,
            pending_id,
            timeout_secs: self.timeout_secs,
            metadata: self.metadata,
        })
    }
}

/// An account's or a transfer's `code`: 0 to 65535, 0 when absent.
fn transfer_code(code: Option<i32>, field: &str) -> Result<i32, LedgerError> {
    let code = code.unwrap_or(0);
    if (0..=65535).contains(&code) {
        Ok(code)
    } else {
        Err(LedgerError::validation(
            field.to_owned(),
            "must be between 0 and 65535",
        ))
    }
}
