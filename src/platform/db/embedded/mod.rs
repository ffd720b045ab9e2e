//! A private PostgreSQL server run from the system's own binaries.
//!
//! When Flowlet starts without a database URL, it runs PostgreSQL itself in a
//! data directory so that a newcomer needs nothing running beforehand. The
//! layout under the chosen directory is:
//!
//! * `<dir>/data`: the cluster (PGDATA), created with `initdb` on first use;
//! * `<dir>/postgres.log`: the server log, appended to on every start.
//!
//! The server listens on 127.0.0.1 only, on a free port picked at start, with
//! the Unix socket disabled, and trusts the `postgres` role (it is reachable
//! from this machine only). If a server is already running on the data
//! directory (another instance, or one left up by a crash), it is reused
//! rather than started twice, and left running when this handle goes away.

mod binaries;
mod cluster;
mod dirs;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::{error, info, warn};

use binaries::{binaries_major_version, check_versions, cluster_major_version};
use cluster::{Cluster, RunAs, StartFailure, Status, free_port};
use dirs::{
    check_owner, choose_dir, chown, first_unsearchable_ancestor, prepare_log_file,
    prepare_new_data_dir,
};

pub use binaries::find_bin_dir;

/// Name of the cluster directory under the embedded directory (PGDATA).
const DATA_SUBDIR: &str = "data";
/// Name of the server log file under the embedded directory.
const LOG_FILE: &str = "postgres.log";
/// The superuser role created by initdb, and the system user we drop to as root.
const SUPERUSER: &str = "postgres";
/// How many times we try to start the server (a new port each time).
const START_ATTEMPTS: usize = 3;

/// Everything that can go wrong running the embedded server.
///
/// Each message is meant for an operator reading a terminal: it says what
/// failed and what to do about it.
#[derive(Debug, Error)]
pub enum EmbeddedError {
    /// No directory holding both `initdb` and `pg_ctl` was found.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH, via pg_config, or under \
         /usr/lib/postgresql/*/bin: install PostgreSQL (e.g. `apt-get install postgresql`) or set \
         FLOWLET__DATABASE__URL to an existing server"
    )]
    BinariesNotFound,

    /// `pg_ctl --version` printed something we could not read a version from.
    #[error(
        "could not tell the PostgreSQL version of the binaries in {}: `pg_ctl --version` printed \
         {output:?}; check that PostgreSQL is installed correctly, or set FLOWLET__DATABASE__URL \
         to an existing server",
        bin_dir.display()
    )]
    UnknownVersion {
        /// The directory holding the binaries.
        bin_dir: PathBuf,
        /// What `pg_ctl --version` printed.
        output: String,
    },

    /// The existing cluster was made by another major version than the binaries.
    #[error(
        "the embedded database in {} was created by PostgreSQL {data_version}, but the server \
         binaries in {} are PostgreSQL {bin_version}: install the PostgreSQL {data_version} \
         server, upgrade the cluster with pg_upgrade, or move that directory away to start over \
         with an empty database",
        data_dir.display(),
        bin_dir.display()
    )]
    VersionMismatch {
        /// The cluster directory.
        data_dir: PathBuf,
        /// Major version in `<data>/PG_VERSION`.
        data_version: String,
        /// Major version of the binaries found.
        bin_version: String,
        /// The directory holding the binaries.
        bin_dir: PathBuf,
    },

    /// Running as root, but there is no `postgres` user to run the server as.
    #[error(
        "running as root, but there is no `postgres` system user to run the embedded PostgreSQL \
         as (PostgreSQL refuses to run as root): create one (e.g. `useradd --system --home-dir \
         /var/lib/postgresql postgres`), run Flowlet as a non-root user, or set \
         FLOWLET__DATABASE__URL to an existing server"
    )]
    NoPostgresUser,

    /// Running as root, and the `postgres` user cannot reach the chosen directory.
    #[error(
        "the embedded PostgreSQL runs as the `{user}` system user (PostgreSQL refuses to run as \
         root), but that user cannot reach {} because {} is not searchable by it: set \
         database.embedded_dir (env FLOWLET__DATABASE__EMBEDDED_DIR) to a directory that user \
         can reach, such as /tmp/flowlet, or set FLOWLET__DATABASE__URL to an existing server",
        dir.display(),
        blocked_at.display()
    )]
    Unreachable {
        /// The embedded directory asked for.
        dir: PathBuf,
        /// The system user the server would run as.
        user: String,
        /// The first ancestor that user may not search.
        blocked_at: PathBuf,
    },

    /// The fallback directory under the temp dir exists but is not safely ours.
    #[error(
        "the embedded PostgreSQL runs as the `{user}` system user, which cannot reach {}, so it \
         would use {} instead, but that already exists and {reason} (another user may have \
         made it): remove it, set database.embedded_dir (env FLOWLET__DATABASE__EMBEDDED_DIR) to \
         a directory that user can reach, or set FLOWLET__DATABASE__URL to an existing server",
        requested.display(),
        fallback.display()
    )]
    UnsafeFallback {
        /// The embedded directory asked for.
        requested: PathBuf,
        /// Where it would have gone instead.
        fallback: PathBuf,
        /// The system user the server would run as.
        user: String,
        /// What is wrong with the fallback.
        reason: String,
    },

    /// The existing cluster belongs to another user than the one the server runs as.
    #[error(
        "the embedded database in {} belongs to uid {owner_uid}, but the server would run as \
         `{user}` (uid {uid}) and PostgreSQL only runs on a data directory its own user owns: \
         fix it with `chown -R {user} {}`, or set FLOWLET__DATABASE__EMBEDDED_DIR to another \
         directory",
        data_dir.display(),
        data_dir.display()
    )]
    WrongOwner {
        /// The cluster directory.
        data_dir: PathBuf,
        /// Its owner.
        owner_uid: u32,
        /// The user the server would run as.
        user: String,
        /// That user's uid.
        uid: u32,
    },

    /// `initdb` failed.
    #[error(
        "initdb failed to create the embedded database in {}: {stderr}\nIf that directory holds \
         a half-created cluster from an interrupted run, delete it and start again; or set \
         FLOWLET__DATABASE__URL to an existing server",
        data_dir.display()
    )]
    Init {
        /// The cluster directory.
        data_dir: PathBuf,
        /// What initdb wrote to stderr.
        stderr: String,
    },

    /// `pg_ctl start` failed.
    #[error(
        "the embedded PostgreSQL in {} failed to start on 127.0.0.1:{port}: {stderr}\n--- last \
         lines of {} ---\n{log_tail}\n--- end of log ---\nFix the problem the log shows, or set \
         FLOWLET__DATABASE__URL to an existing server",
        data_dir.display(),
        log_file.display()
    )]
    Start {
        /// The cluster directory.
        data_dir: PathBuf,
        /// The port it was asked to listen on.
        port: u16,
        /// What pg_ctl wrote to stderr.
        stderr: String,
        /// The server log.
        log_file: PathBuf,
        /// The last lines the server logged during this attempt.
        log_tail: String,
    },

    /// A server runs on the data directory, but we could not attach to it.
    #[error(
        "a PostgreSQL server is already running on {}, but it cannot be used: {reason}; stop it \
         with `pg_ctl -D {} stop -m fast` (as the owner of that directory) and start again",
        data_dir.display(),
        data_dir.display()
    )]
    Attach {
        /// The cluster directory.
        data_dir: PathBuf,
        /// Why we could not use the running server.
        reason: String,
    },

    /// `pg_ctl status` failed in an unexpected way.
    #[error(
        "could not check whether PostgreSQL is running on {}: `pg_ctl status` said {stderr}",
        data_dir.display()
    )]
    Status {
        /// The cluster directory.
        data_dir: PathBuf,
        /// What pg_ctl wrote.
        stderr: String,
    },

    /// `pg_ctl stop` failed and the server is still running.
    #[error(
        "could not stop the embedded PostgreSQL in {}: {stderr}\nIt may still be running: stop \
         it with `pg_ctl -D {} stop -m fast` (as the owner of that directory)",
        data_dir.display(),
        data_dir.display()
    )]
    Stop {
        /// The cluster directory.
        data_dir: PathBuf,
        /// What pg_ctl wrote to stderr.
        stderr: String,
    },

    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand to wrap an `io::Error` with what we were doing.
fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io { context, source }
}

/// Whether the embedded server's directory may be moved when its user cannot reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Exactly the directory given (an operator chose it): unreachable is an error.
    Exact,
    /// The directory given or, when the server runs as another user (we are root) who cannot
    /// reach it (a clone under root's 0700 home), a private directory under the system temp
    /// dir named from our user and the requested path, so the next start finds it again.
    Relocatable,
}

/// A PostgreSQL server run (or reused) by this process for its own use.
///
/// Exists so that Flowlet can run with no database configured: hand
/// [`EmbeddedPostgres::url`] to the pool, and call [`EmbeddedPostgres::stop`]
/// on shutdown. If the handle is dropped without `stop`, a server this process
/// started is stopped synchronously (best effort); a server it merely attached
/// to is left running.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster: Cluster,
    port: u16,
    /// Whether this process started the server (and so must stop it).
    owned: bool,
    /// Whether `stop` already ran, so `Drop` has nothing to do.
    stopped: bool,
}

impl EmbeddedPostgres {
    /// Find binaries, initdb if needed, start (or attach to an already running
    /// server in that dir).
    ///
    /// This is how the service gets a database when none is configured: `dir`
    /// is created if needed and holds the cluster (`data/`) and the server log
    /// (`postgres.log`). As root, the server runs as the `postgres` system user,
    /// which must be able to reach `dir`; with [`Placement::Relocatable`] a
    /// directory it cannot reach is replaced by one under the temp dir (logged,
    /// and [`EmbeddedPostgres::dir`] tells which).
    pub async fn start(
        dir: &Path,
        placement: Placement,
    ) -> Result<EmbeddedPostgres, EmbeddedError> {
        // A short synchronous look at a few directories (and maybe pg_config).
        let bin_dir = find_bin_dir()?;
        let run_as = RunAs::determine()?;
        let dir = choose_dir(dir, placement, &run_as)?;

        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(format!("creating {}", dir.display())))?;
        let dir = tokio::fs::canonicalize(&dir)
            .await
            .map_err(io_err(format!("resolving {}", dir.display())))?;
        if run_as.switch {
            // Directories create_dir_all just made follow the umask: check again.
            if let Some(blocked_at) = first_unsearchable_ancestor(&dir, &run_as)? {
                return Err(EmbeddedError::Unreachable {
                    dir,
                    user: run_as.name,
                    blocked_at,
                });
            }
            chown(&dir, &run_as)?;
        }

        let cluster = Cluster {
            data_dir: dir.join(DATA_SUBDIR),
            log_file: dir.join(LOG_FILE),
            dir,
            bin_dir,
            run_as,
        };
        let bin_version = binaries_major_version(&cluster.bin_dir).await?;

        if let Some(data_version) = cluster_major_version(&cluster.data_dir).await? {
            check_versions(&cluster, &data_version, &bin_version)?;
            check_owner(&cluster).await?;
        } else {
            prepare_new_data_dir(&cluster).await?;
            cluster.initdb().await?;
        }
        prepare_log_file(&cluster).await?;

        let mut attempts = 0;
        loop {
            if let Some(port) = cluster.running_port().await? {
                info!(port, data_dir = %cluster.data_dir.display(),
                    "attaching to the embedded PostgreSQL already running there");
                return Ok(EmbeddedPostgres {
                    cluster,
                    port,
                    owned: false,
                    stopped: false,
                });
            }
            attempts += 1;
            let port = free_port()?;
            info!(port, data_dir = %cluster.data_dir.display(), "starting embedded PostgreSQL");
            match cluster.start_on(port).await {
                Ok(()) => {
                    return Ok(EmbeddedPostgres {
                        cluster,
                        port,
                        owned: true,
                        stopped: false,
                    });
                }
                Err(StartFailure::PortTaken(e)) => {
                    if attempts >= START_ATTEMPTS {
                        return Err(e);
                    }
                    warn!(
                        port,
                        attempts, "port was taken before PostgreSQL could bind it; retrying"
                    );
                }
                Err(StartFailure::Other(e)) => {
                    // Another process may have started the server on this
                    // directory at the same moment: attach to it if so.
                    let raced = matches!(cluster.status().await?, Status::Running);
                    if !raced || attempts >= START_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// e.g. postgres://postgres@127.0.0.1:54321/postgres
    ///
    /// The connection string for the default database, to give to the pool.
    pub fn url(&self) -> String {
        self.url_for_database(SUPERUSER)
    }

    /// The connection string for another database on the same server (e.g.
    /// one per test, or the service's own), with the name percent-encoded.
    pub fn url_for_database(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// The directory holding the cluster and its log (where [`Placement::Relocatable`] put it).
    pub fn dir(&self) -> &Path {
        &self.cluster.dir
    }

    /// The TCP port the server listens on (on 127.0.0.1), for tools that want
    /// host and port rather than a URL.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop it cleanly (pg_ctl stop -m fast -w) if this process started it;
    /// no-op if we merely attached.
    ///
    /// Call this on shutdown, after the pool is closed, so the server ends in
    /// order rather than from `Drop`. A server that is already down is fine.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        // Whatever happens, Drop must not try again.
        self.stopped = true;
        if !self.owned {
            info!(
                port = self.port,
                "leaving the attached embedded PostgreSQL running"
            );
            return Ok(());
        }
        self.cluster.stop().await
    }
}

impl Drop for EmbeddedPostgres {
    /// A server this process started must not outlive it by accident: stop it
    /// synchronously (best effort, errors logged) if `stop` was not called.
    fn drop(&mut self) {
        if self.owned && !self.stopped {
            self.stopped = true;
            if let Err(e) = self.cluster.stop_blocking() {
                error!(error = %e, "could not stop the embedded PostgreSQL");
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encode everything but unreserved characters, for a URL path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}
