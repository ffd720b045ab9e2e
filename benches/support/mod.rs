//! What the benchmarks share: their scratch database on a PostgreSQL server.

use std::time::Duration;

use anyhow::{Context, anyhow};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// Drops the bench's database `name` after `result`, reporting both failures if both happen.
pub async fn drop_database_after(
    label: &str,
    server_url: &str,
    name: &str,
    result: anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dropped = async {
        let mut admin = connect(server_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .context("DROP DATABASE")
    }
    .await;
    match (result, dropped) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(e)) => Err(e.context(format!("dropping database {name}"))),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(drop_error)) => {
            eprintln!("{label}: could not drop database {name}: {drop_error:#}");
            Err(e)
        }
    }
}

pub async fn connect(url: &str) -> anyhow::Result<AsyncPgConnection> {
    tokio::time::timeout(Duration::from_secs(10), AsyncPgConnection::establish(url))
        .await
        .map_err(|_| anyhow!("connecting took longer than 10 s"))?
        .context("connecting")
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("not a database URL: {}", redact(url)))?;
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// `url` without its password, for printing.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***@{host}{}",
                &url[..scheme_end],
                &rest[authority.len()..]
            )
        }
        _ => url.to_owned(),
    }
}
