//! `flowlet admin ...`: the operator's verbs. Each prints a human table, or JSON with
//! `--json`, and exits non-zero on failure.

use clap::Subcommand;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::platform::config::Settings;
use crate::platform::db::migration_status;
use crate::platform::infra::{Infra, Migrate};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the database migrations this binary knows, applied and pending.
    Migrations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration, with secrets shown only as set/unset.
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one admin verb.
pub async fn run(command: AdminCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        AdminCommand::Migrations { json } => {
            let infra = Infra::start(&settings, Migrate::Skip).await?;
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
        AdminCommand::Config { json } => {
            let view = ConfigView::of(&settings);
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
    }
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
            ("log.format", self.log_format.to_owned()),
            ("log.level", self.log_level.clone()),
        ]
    }
}

/// A plain text table with aligned columns, for humans at a terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut out = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["KEY", "VALUE"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "2".into()],
            ],
        );
        assert_eq!(t, "KEY     VALUE\na       1\nlonger  2\n");
    }

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
