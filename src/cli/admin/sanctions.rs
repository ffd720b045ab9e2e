//! `admin sanctions ...`: loading screening lists, rescreening customers, and listing what is
//! loaded.

use anyhow::Context;
use clap::Subcommand;

use super::{print_json, table, with_kyc};
use crate::kyc::SanctionsList;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum SanctionsCommand {
    /// Load (replace) a screening list from a file: OFAC's sdn.csv, or a CSV with the header
    /// name,aliases,date_of_birth,country. Run `sanctions rescreen` afterwards.
    Load {
        file: std::path::PathBuf,
        /// The list's name (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Screen every customer holding a tier against the loaded lists again; strong matches
    /// are suspended to tier 0 and sent to review.
    Rescreen {
        #[arg(long)]
        json: bool,
    },
    /// The loaded lists.
    Lists {
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run_sanctions(
    command: SanctionsCommand,
    settings: &Settings,
) -> anyhow::Result<()> {
    match command {
        SanctionsCommand::Load { file, name, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .context("name the list with --name")?
                    .to_owned(),
            };
            let list = with_kyc(settings, |kyc, _| async move {
                Ok(kyc.load_list(&name, &bytes).await?)
            })
            .await?;
            if json {
                return print_json(&list);
            }
            print_lists(&[list]);
            println!("Run `flowlet admin sanctions rescreen` to screen approved customers again.");
            Ok(())
        }
        SanctionsCommand::Rescreen { json } => {
            let result =
                with_kyc(settings, |kyc, _| async move { Ok(kyc.rescreen().await?) }).await?;
            if json {
                return print_json(&result);
            }
            println!(
                "Screened {} customer(s): {} flagged for review, {} left to an open application.",
                result.screened, result.flagged, result.skipped
            );
            Ok(())
        }
        SanctionsCommand::Lists { json } => {
            let lists = with_kyc(settings, |kyc, _| async move { Ok(kyc.lists().await?) }).await?;
            if json {
                return print_json(&lists);
            }
            print_lists(&lists);
            Ok(())
        }
    }
}

fn print_lists(lists: &[SanctionsList]) {
    let rows: Vec<Vec<String>> = lists
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.format.clone(),
                l.entries.to_string(),
                l.version.to_string(),
                l.loaded_at.to_rfc3339(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["LIST", "FORMAT", "ENTRIES", "VERSION", "LOADED"], &rows)
    );
}
