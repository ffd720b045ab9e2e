//! `admin migrations` and `admin config`: the schema versions this binary knows (applied and
//! pending) and the effective configuration, secrets shown only as set/unset.

use secrecy::ExposeSecret;
use serde::Serialize;

use super::table;
use crate::platform::db::migration_status;
use crate::platform::infra::{Infra, Migrate};
use crate::settings::Settings;

/// Runs `admin migrations`.
pub(super) async fn run_migrations(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let infra = Infra::start(&settings.database, &settings.redis, Migrate::Skip).await?;
    let status = migration_status(&infra.db).await;
    infra.shutdown().await;
    let status = status?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let rows = status
            .applied
            .iter()
            .map(|v| vec![v.clone(), "applied".to_owned()])
            .chain(
                status
                    .pending
                    .iter()
                    .map(|v| vec![v.clone(), "pending".to_owned()]),
            )
            .collect::<Vec<_>>();
        print!("{}", table(&["VERSION", "STATE"], &rows));
    }
    Ok(())
}

/// Runs `admin config`.
pub(super) fn run_config(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let view = ConfigView::of(settings);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let rows = view
            .entries()
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect::<Vec<_>>();
        print!("{}", table(&["KEY", "VALUE"], &rows));
    }
    Ok(())
}

/// The configuration as an operator may see it: secrets reduced to set/unset.
#[derive(Serialize)]
struct ConfigView {
    env: &'static str,
    server_bind: String,
    server_workers: Option<usize>,
    server_body_limit_bytes: usize,
    database_url: &'static str,
    database_embedded_dir: String,
    database_pool_size: usize,
    database_migrate_on_start: bool,
    redis_url: &'static str,
    redis_key_prefix: String,
    auth_jwt_secret: &'static str,
    auth_jwt_kid: String,
    auth_api_key_secret: &'static str,
    rate_limit_enabled: bool,
    rate_limit_ip_per_minute: u64,
    rate_limit_key_per_hour: u64,
    rate_limit_partner_per_hour: u64,
    smtp_url: &'static str,
    log_format: &'static str,
    log_level: String,
}

fn set_or_unset(value: Option<&str>) -> &'static str {
    if value.is_some() { "<set>" } else { "<unset>" }
}

impl ConfigView {
    fn of(s: &Settings) -> Self {
        Self {
            env: s.env.as_str(),
            server_bind: s.server.bind.to_string(),
            server_workers: s.server.workers,
            server_body_limit_bytes: s.server.body_limit_bytes,
            database_url: set_or_unset(s.database_url()),
            database_embedded_dir: s.database.embedded_dir.display().to_string(),
            database_pool_size: s.database.pool_size,
            database_migrate_on_start: s.database.migrate_on_start,
            redis_url: set_or_unset(s.redis_url()),
            redis_key_prefix: s.redis.key_prefix.clone(),
            auth_jwt_secret: set_or_unset(Some(s.auth.jwt_secret.expose_secret())),
            auth_jwt_kid: s.auth.jwt_kid.clone(),
            auth_api_key_secret: set_or_unset(Some(s.auth.api_key_secret.expose_secret())),
            rate_limit_enabled: s.rate_limit.enabled,
            rate_limit_ip_per_minute: s.rate_limit.ip_per_minute,
            rate_limit_key_per_hour: s.rate_limit.key_per_hour,
            rate_limit_partner_per_hour: s.rate_limit.partner_per_hour,
            smtp_url: set_or_unset(s.smtp_url()),
            log_format: match s.log.format {
                crate::platform::config::LogFormat::Pretty => "pretty",
                crate::platform::config::LogFormat::Json => "json",
            },
            log_level: s.log.level.clone(),
        }
    }

    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("env", self.env.to_owned()),
            ("server.bind", self.server_bind.clone()),
            (
                "server.workers",
                self.server_workers
                    .map_or("auto".to_owned(), |w| w.to_string()),
            ),
            (
                "server.body_limit_bytes",
                self.server_body_limit_bytes.to_string(),
            ),
            ("database.url", self.database_url.to_owned()),
            ("database.embedded_dir", self.database_embedded_dir.clone()),
            ("database.pool_size", self.database_pool_size.to_string()),
            (
                "database.migrate_on_start",
                self.database_migrate_on_start.to_string(),
            ),
            ("redis.url", self.redis_url.to_owned()),
            ("redis.key_prefix", self.redis_key_prefix.clone()),
            ("auth.jwt_secret", self.auth_jwt_secret.to_owned()),
            ("auth.jwt_kid", self.auth_jwt_kid.clone()),
            ("auth.api_key_secret", self.auth_api_key_secret.to_owned()),
            ("rate_limit.enabled", self.rate_limit_enabled.to_string()),
            (
                "rate_limit.ip_per_minute",
                self.rate_limit_ip_per_minute.to_string(),
            ),
            (
                "rate_limit.key_per_hour",
                self.rate_limit_key_per_hour.to_string(),
            ),
            (
                "rate_limit.partner_per_hour",
                self.rate_limit_partner_per_hour.to_string(),
            ),
            ("smtp.url", self.smtp_url.to_owned()),
            ("log.format", self.log_format.to_owned()),
            ("log.level", self.log_level.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_view_never_shows_secret_values() {
        let settings = Settings::load_from(&crate::platform::config::Sources::with_vars([(
            "FLOWLET__DATABASE__URL",
            "postgres://u:hunter2@db/x",
        )]))
        .unwrap();
        let json = serde_json::to_string(&ConfigView::of(&settings)).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("<set>"), "{json}");
    }
}
