//! PII key rotation: re-sealing every personal-data value (customers' fields, applications'
//! documents) still sealed under a key other than the active one.

use super::{KycService, application_context, context};
use crate::kyc::error::KycError;
use crate::kyc::store;

impl KycService {
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
}
