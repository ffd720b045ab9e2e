//! Sanctions: loading lists, the screening index built from them (cached until a list
//! changes), screening one person, and re-screening every customer holding a tier.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{KycService, LoadedLists, Outcome};
use crate::kyc::error::KycError;
use crate::kyc::model::{self, ApplicationId, Check, CheckName, ScreeningOutcome, Status};
use crate::kyc::screening::{
    self, BirthDate, ListEntry, ScreeningIndex, ScreeningSettings, Subject,
};
use crate::kyc::store::{self, ApplicationRow, EntryRow};
use crate::platform::db::Tx;

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl KycService {
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
    pub(super) async fn loaded_lists(&self) -> Result<Option<Arc<LoadedLists>>, KycError> {
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

    /// [`Self::screen`] on a blocking thread.
    pub(super) async fn screen_off_thread(
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
}
