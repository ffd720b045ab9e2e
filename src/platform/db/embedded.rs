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

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};
use thiserror::Error;
use tracing::{error, info, warn};

/// Name of the cluster directory under the embedded directory (PGDATA).
const DATA_SUBDIR: &str = "data";
/// Name of the server log file under the embedded directory.
const LOG_FILE: &str = "postgres.log";
/// The superuser role created by initdb, and the system user we drop to as root.
const SUPERUSER: &str = "postgres";
/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// How long we wait for an already running server to become ready before attaching.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times we try to start the server (a new port each time).
const START_ATTEMPTS: usize = 3;
/// How many lines of the server log go into a start error.
const LOG_TAIL_LINES: usize = 20;
/// Where server binaries are looked for when neither PATH nor pg_config has them.
/// One `*` per pattern; among its matches the highest version wins.
const FALLBACK_BIN_GLOBS: &[&str] = &[
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/pgsql-*/bin",
];

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

/// The system user the server processes run as.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
    /// Whether we switch to this user (we are root) or it is simply ourselves.
    switch: bool,
}

impl RunAs {
    /// Ourselves when not root; the `postgres` system user when root.
    fn determine() -> Result<RunAs, EmbeddedError> {
        if Uid::effective().is_root() {
            let user = User::from_name(SUPERUSER)
                .map_err(|errno| EmbeddedError::Io {
                    context: format!("looking up the `{SUPERUSER}` system user"),
                    source: errno.into(),
                })?
                .ok_or(EmbeddedError::NoPostgresUser)?;
            Ok(RunAs {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                switch: true,
            })
        } else {
            let uid = Uid::effective();
            let name = User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            Ok(RunAs {
                name,
                uid: uid.as_raw(),
                gid: Gid::effective().as_raw(),
                switch: false,
            })
        }
    }
}

/// Paths and identity shared by every command we run against one cluster.
#[derive(Debug, Clone)]
struct Cluster {
    dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    run_as: RunAs,
}

/// What `pg_ctl status` told us.
enum Status {
    Running,
    NotRunning,
}

/// Why one start attempt failed.
enum StartFailure {
    /// Someone else bound the port between our pick and the server's bind.
    PortTaken(EmbeddedError),
    /// Anything else.
    Other(EmbeddedError),
}

impl Cluster {
    /// A command for one of the PostgreSQL binaries, run as the server user, in
    /// `<dir>` (a cwd that user can enter), with no stdin.
    fn command(&self, program: &str) -> StdCommand {
        let mut cmd = StdCommand::new(self.bin_dir.join(program));
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.run_as.switch {
            cmd.uid(self.run_as.uid).gid(self.run_as.gid);
        }
        cmd
    }

    /// Run a command to completion, asynchronously.
    async fn run(&self, what: &str, cmd: StdCommand) -> Result<Output, EmbeddedError> {
        tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(io_err(format!(
                "running {what} from {}",
                self.bin_dir.display()
            )))
    }

    /// `initdb` a new cluster in the (empty) data directory.
    async fn initdb(&self) -> Result<(), EmbeddedError> {
        info!(data_dir = %self.data_dir.display(), user = %self.run_as.name,
            "initialising a new embedded PostgreSQL cluster");
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-instructions");
        let out = self.run("initdb", cmd).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EmbeddedError::Init {
                data_dir: self.data_dir.clone(),
                stderr: describe_failure(&out),
            })
        }
    }

    fn status_command(&self) -> StdCommand {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        cmd
    }

    fn interpret_status(&self, out: &Output) -> Result<Status, EmbeddedError> {
        match out.status.code() {
            Some(0) => Ok(Status::Running),
            // 3: no server running; 4: no accessible data directory.
            Some(3) | Some(4) => Ok(Status::NotRunning),
            _ => Err(EmbeddedError::Status {
                data_dir: self.data_dir.clone(),
                stderr: describe_failure(out),
            }),
        }
    }

    async fn status(&self) -> Result<Status, EmbeddedError> {
        let out = self.run("pg_ctl status", self.status_command()).await?;
        self.interpret_status(&out)
    }

    fn status_blocking(&self) -> Result<Status, EmbeddedError> {
        let out = self
            .status_command()
            .output()
            .map_err(io_err("running pg_ctl status"))?;
        self.interpret_status(&out)
    }

    /// If a server runs on the data directory, wait until it is ready and return its port.
    async fn running_port(&self) -> Result<Option<u16>, EmbeddedError> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            if let Status::NotRunning = self.status().await? {
                return Ok(None);
            }
            match tokio::fs::read_to_string(&pid_file).await {
                Ok(text) => {
                    let info =
                        parse_postmaster_pid(&text).map_err(|reason| EmbeddedError::Attach {
                            data_dir: self.data_dir.clone(),
                            reason,
                        })?;
                    if info.ready {
                        return Ok(Some(info.port));
                    }
                }
                // The server went away (or is just appearing) between the two looks.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io_err(format!("reading {}", pid_file.display()))(e));
                }
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedError::Attach {
                    data_dir: self.data_dir.clone(),
                    reason: format!(
                        "it did not become ready within {} s",
                        ATTACH_TIMEOUT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One `pg_ctl start` on the given port.
    async fn start_on(&self, port: u16) -> Result<(), StartFailure> {
        let log_offset = std::fs::metadata(&self.log_file).map_or(0, |m| m.len());
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-o"])
            // pg_ctl hands -o to /bin/sh, so '' reaches the server as an empty
            // value: no Unix socket, hence no /var/run permission problems.
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            ))
            .arg("start")
            // Own process group: a Ctrl-C sent to the terminal's group must not
            // reach the postmaster; the service stops it itself, in order.
            .process_group(0);
        let out = self
            .run("pg_ctl start", cmd)
            .await
            .map_err(StartFailure::Other)?;
        if out.status.success() {
            return Ok(());
        }
        let log_tail = read_log_tail(&self.log_file, log_offset, LOG_TAIL_LINES);
        let port_taken = log_tail.contains("already in use");
        let err = EmbeddedError::Start {
            data_dir: self.data_dir.clone(),
            port,
            stderr: describe_failure(&out),
            log_file: self.log_file.clone(),
            log_tail,
        };
        Err(if port_taken {
            StartFailure::PortTaken(err)
        } else {
            StartFailure::Other(err)
        })
    }

    fn stop_command(&self) -> StdCommand {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-m",
            "fast",
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "stop",
        ]);
        cmd
    }

    fn stop_error(&self, out: &Output) -> EmbeddedError {
        EmbeddedError::Stop {
            data_dir: self.data_dir.clone(),
            stderr: describe_failure(out),
        }
    }

    async fn stop(&self) -> Result<(), EmbeddedError> {
        info!(data_dir = %self.data_dir.display(), "stopping embedded PostgreSQL");
        let out = self.run("pg_ctl stop", self.stop_command()).await?;
        if out.status.success() {
            return Ok(());
        }
        match self.status().await? {
            Status::NotRunning => {
                info!(data_dir = %self.data_dir.display(), "embedded PostgreSQL was already stopped");
                Ok(())
            }
            Status::Running => Err(self.stop_error(&out)),
        }
    }

    fn stop_blocking(&self) -> Result<(), EmbeddedError> {
        info!(data_dir = %self.data_dir.display(), "stopping embedded PostgreSQL");
        let out = self
            .stop_command()
            .output()
            .map_err(io_err("running pg_ctl stop"))?;
        if out.status.success() {
            return Ok(());
        }
        match self.status_blocking()? {
            Status::NotRunning => Ok(()),
            Status::Running => Err(self.stop_error(&out)),
        }
    }
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

/// Find the directory holding the PostgreSQL server binaries (`initdb`, `pg_ctl`).
///
/// The embedded server runs the system's own PostgreSQL, so we look where
/// installs put it: a PATH directory with both (symlinks resolved to the real
/// bin dir), then `pg_config --bindir`, then `/usr/lib/postgresql/*/bin`
/// (highest version), `/usr/local/pgsql/bin`,
/// `/opt/homebrew/opt/postgresql*/bin`, `/usr/pgsql-*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    let path_var = std::env::var_os("PATH");
    discover_bin_dir(
        path_var.as_deref(),
        || pg_config_bindir(path_var.as_deref()),
        FALLBACK_BIN_GLOBS,
    )
    .ok_or(EmbeddedError::BinariesNotFound)
}

/// The discovery order of [`find_bin_dir`], with PATH, pg_config and the
/// fallback patterns passed in so that it can be tested.
fn discover_bin_dir(
    path_var: Option<&OsStr>,
    pg_config_bindir: impl FnOnce() -> Option<PathBuf>,
    fallback_globs: &[&str],
) -> Option<PathBuf> {
    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(path_var) {
            if !has_server_binaries(&dir) {
                continue;
            }
            // Resolve e.g. /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl:
            // pg_ctl finds `postgres` next to its real self.
            if let Ok(real) = std::fs::canonicalize(dir.join("pg_ctl"))
                && let Some(real_dir) = real.parent()
                && has_server_binaries(real_dir)
            {
                return Some(real_dir.to_path_buf());
            }
        }
    }
    if let Some(dir) = pg_config_bindir()
        && has_server_binaries(&dir)
    {
        return Some(std::fs::canonicalize(&dir).unwrap_or(dir));
    }
    fallback_globs
        .iter()
        .flat_map(|pattern| expand_glob(pattern))
        .find(|dir| has_server_binaries(dir))
}

/// `pg_config --bindir`, if a pg_config is on PATH and answers.
fn pg_config_bindir(path_var: Option<&OsStr>) -> Option<PathBuf> {
    let pg_config = std::env::split_paths(path_var?)
        .map(|dir| dir.join("pg_config"))
        .find(|p| is_executable(p))?;
    let out = StdCommand::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let dir = text.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

fn has_server_binaries(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Expand a pattern with at most one `*` inside one path component, best
/// version first (so `/usr/lib/postgresql/*/bin` gives 16 before 15 before 9.6).
fn expand_glob(pattern: &str) -> Vec<PathBuf> {
    let Some(star) = pattern.find('*') else {
        return vec![PathBuf::from(pattern)];
    };
    let parent_end = pattern[..star].rfind('/').map_or(0, |i| i + 1);
    let parent = &pattern[..parent_end];
    let rest = &pattern[star + 1..];
    let (component_suffix, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let component_prefix = &pattern[parent_end..star];
    let parent_dir = if parent.is_empty() { "." } else { parent };
    let Ok(entries) = std::fs::read_dir(parent_dir) else {
        return Vec::new();
    };
    let mut matches: Vec<(Vec<u64>, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let middle = name
                .strip_prefix(component_prefix)?
                .strip_suffix(component_suffix)?;
            let key = version_key(middle);
            let path = PathBuf::from(format!("{parent}{name}{tail}"));
            Some((key, name, path))
        })
        .collect();
    matches.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    matches.into_iter().map(|(_, _, path)| path).collect()
}

/// The numbers in a string, in order, for comparing versions ("9.6" < "15" < "16").
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The major version from `pg_ctl --version` output such as
/// "pg_ctl (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)": "15" (or "9.6" before 10).
fn parse_major_version(output: &str) -> Option<String> {
    let token = output
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let numbers = version_key(token);
    match numbers.as_slice() {
        [major, ..] if *major >= 10 => Some(major.to_string()),
        [major, minor, ..] => Some(format!("{major}.{minor}")),
        _ => None,
    }
}

async fn binaries_major_version(bin_dir: &Path) -> Result<String, EmbeddedError> {
    let out = tokio::process::Command::new(bin_dir.join("pg_ctl"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err(format!(
            "running pg_ctl --version from {}",
            bin_dir.display()
        )))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_major_version(&text).ok_or_else(|| EmbeddedError::UnknownVersion {
        bin_dir: bin_dir.to_path_buf(),
        output: text.trim().to_string(),
    })
}

/// The major version in `<data>/PG_VERSION`, or None if there is no cluster yet.
async fn cluster_major_version(data_dir: &Path) -> Result<Option<String>, EmbeddedError> {
    let file = data_dir.join("PG_VERSION");
    match tokio::fs::read_to_string(&file).await {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", file.display()))(e)),
    }
}

fn check_versions(
    cluster: &Cluster,
    data_version: &str,
    bin_version: &str,
) -> Result<(), EmbeddedError> {
    if data_version == bin_version {
        Ok(())
    } else {
        Err(EmbeddedError::VersionMismatch {
            data_dir: cluster.data_dir.clone(),
            data_version: data_version.to_string(),
            bin_version: bin_version.to_string(),
            bin_dir: cluster.bin_dir.clone(),
        })
    }
}

async fn check_owner(cluster: &Cluster) -> Result<(), EmbeddedError> {
    let meta = tokio::fs::metadata(&cluster.data_dir)
        .await
        .map_err(io_err(format!("reading {}", cluster.data_dir.display())))?;
    if meta.uid() == cluster.run_as.uid {
        Ok(())
    } else {
        Err(EmbeddedError::WrongOwner {
            data_dir: cluster.data_dir.clone(),
            owner_uid: meta.uid(),
            user: cluster.run_as.name.clone(),
            uid: cluster.run_as.uid,
        })
    }
}

/// Create the data directory (mode 0700, owned by the server user) for initdb.
async fn prepare_new_data_dir(cluster: &Cluster) -> Result<(), EmbeddedError> {
    let data_dir = &cluster.data_dir;
    match tokio::fs::DirBuilder::new()
        .mode(0o700)
        .create(data_dir)
        .await
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            tokio::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .await
                .map_err(io_err(format!(
                    "setting permissions of {}",
                    data_dir.display()
                )))?;
        }
        Err(e) => return Err(io_err(format!("creating {}", data_dir.display()))(e)),
    }
    if cluster.run_as.switch {
        chown(data_dir, &cluster.run_as)?;
    }
    Ok(())
}

/// Make sure the server user can append to the log file.
async fn prepare_log_file(cluster: &Cluster) -> Result<(), EmbeddedError> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cluster.log_file)
        .await
        .map_err(io_err(format!("creating {}", cluster.log_file.display())))?;
    if cluster.run_as.switch {
        chown(&cluster.log_file, &cluster.run_as)?;
    }
    Ok(())
}

fn chown(path: &Path, run_as: &RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(io_err(format!(
        "giving {} to the `{}` user",
        path.display(),
        run_as.name
    )))
}

/// The directory the server will use: `requested` unless the server's user cannot reach it
/// and `placement` allows a private fallback under the temp dir.
fn choose_dir(
    requested: &Path,
    placement: Placement,
    run_as: &RunAs,
) -> Result<PathBuf, EmbeddedError> {
    if !run_as.switch {
        return Ok(requested.to_path_buf());
    }
    let requested = resolve_existing_prefix(requested)?;
    let Some(blocked_at) = first_unsearchable_ancestor(&requested, run_as)? else {
        return Ok(requested);
    };
    let unreachable = || EmbeddedError::Unreachable {
        dir: requested.clone(),
        user: run_as.name.clone(),
        blocked_at: blocked_at.clone(),
    };
    if placement == Placement::Exact {
        return Err(unreachable());
    }
    let fallback = resolve_existing_prefix(&std::env::temp_dir())?.join(fallback_name(&requested));
    if first_unsearchable_ancestor(&fallback, run_as)?.is_some() {
        return Err(unreachable());
    }
    create_private_dir(&requested, &fallback, run_as)?;
    info!(
        requested = %requested.display(),
        dir = %fallback.display(),
        user = %run_as.name,
        blocked_at = %blocked_at.display(),
        "the embedded PostgreSQL's user cannot reach its directory; using a private one under \
         the temp dir instead (found again on the next start)"
    );
    Ok(fallback)
}

/// `flowlet-<our user>-<hash of the requested path>`: stable across starts, distinct per user
/// and per project checkout.
fn fallback_name(requested: &Path) -> String {
    use sha2::Digest;
    let uid = Uid::effective();
    let user = User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let digest = sha2::Sha256::digest(requested.as_os_str().as_encoded_bytes());
    let hash: String = digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let user: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("flowlet-{user}-{hash}")
}

/// Creates `dir` (mode 0700) in a world-writable temp dir, or accepts it if it is already
/// ours: a real directory (not a symlink) owned by us or the server user, closed to others.
/// Anything else may have been planted by another user, so it is refused, never reused.
fn create_private_dir(requested: &Path, dir: &Path, run_as: &RunAs) -> Result<(), EmbeddedError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(format!("creating {}", dir.display()))(e)),
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    let reason = if !meta.file_type().is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != run_as.uid && meta.uid() != Uid::effective().as_raw() {
        Some(format!("belongs to uid {}", meta.uid()))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "has mode {:o}, open to other users",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(EmbeddedError::UnsafeFallback {
            requested: requested.to_path_buf(),
            fallback: dir.to_path_buf(),
            user: run_as.name.clone(),
            reason,
        }),
    }
}

/// `path` made absolute with its longest existing prefix resolved (symlinks followed) and the
/// rest appended as given: what the path will be once created, checkable before creating it.
fn resolve_existing_prefix(path: &Path) -> Result<PathBuf, EmbeddedError> {
    let absolute =
        std::path::absolute(path).map_err(io_err(format!("resolving {}", path.display())))?;
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut real) => {
                real.extend(missing.iter().rev());
                return Ok(real);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match (existing.parent(), existing.file_name()) {
                    (Some(parent), Some(name)) => {
                        missing.push(name);
                        existing = parent;
                    }
                    _ => return Ok(absolute.clone()),
                }
            }
            Err(e) => return Err(io_err(format!("resolving {}", existing.display()))(e)),
        }
    }
}

/// The first proper ancestor of `dir` that `user` may not search (enter), if any. Ancestors
/// that do not exist yet are skipped: we create them, and the caller checks again after.
fn first_unsearchable_ancestor(dir: &Path, user: &RunAs) -> Result<Option<PathBuf>, EmbeddedError> {
    let groups = user_groups(user);
    for ancestor in dir.ancestors().skip(1) {
        let meta = match std::fs::metadata(ancestor) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(format!("reading {}", ancestor.display()))(e)),
        };
        let mode = meta.permissions().mode();
        let bit = if meta.uid() == user.uid {
            0o100
        } else if groups.contains(&meta.gid()) {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Ok(Some(ancestor.to_path_buf()));
        }
    }
    Ok(None)
}

/// The groups `user` is in (primary and supplementary), as the kernel would see them.
#[cfg(not(target_vendor = "apple"))]
fn user_groups(user: &RunAs) -> Vec<u32> {
    let mut groups = vec![user.gid];
    if let Ok(name) = std::ffi::CString::new(user.name.as_str())
        && let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(user.gid))
    {
        groups.extend(list.into_iter().map(Gid::as_raw));
    }
    groups
}

/// The groups `user` is in (primary only: macOS has no `getgrouplist` in nix).
#[cfg(target_vendor = "apple")]
fn user_groups(user: &RunAs) -> Vec<u32> {
    vec![user.gid]
}

/// Port (line 4) and readiness (line 8) from `postmaster.pid`.
struct PostmasterPid {
    port: u16,
    ready: bool,
}

fn parse_postmaster_pid(text: &str) -> Result<PostmasterPid, String> {
    let lines: Vec<&str> = text.lines().collect();
    let port_line = lines.get(3).map(|l| l.trim()).unwrap_or_default();
    let port = port_line
        .parse()
        .map_err(|_| format!("its postmaster.pid has no port on line 4 (found {port_line:?})"))?;
    // Line 6 is the listen address; empty means no TCP listener.
    if lines.get(5).is_some_and(|l| l.trim().is_empty()) {
        return Err("it does not listen on TCP (listen_addresses is empty)".to_string());
    }
    // Line 8 (PostgreSQL 10+) is "starting", "stopping", "ready" or "standby".
    let ready = match lines.get(7).map(|l| l.trim()) {
        None => true,
        Some(status) => status == "ready" || status == "standby",
    };
    Ok(PostmasterPid { port, ready })
}

/// A free TCP port on 127.0.0.1 (free now; the server may still lose a race for it).
fn free_port() -> Result<u16, EmbeddedError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(io_err("finding a free port on 127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("finding a free port on 127.0.0.1"))?
        .port();
    Ok(port)
}

/// The last `lines` lines the server logged from byte `offset` on.
fn read_log_tail(log_file: &Path, offset: u64, lines: usize) -> String {
    match std::fs::read(log_file) {
        Ok(bytes) => {
            let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[start..]);
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.trim().is_empty() {
                "(the server logged nothing)".to_string()
            } else {
                tail
            }
        }
        Err(e) => format!("(could not read {}: {e})", log_file.display()),
    }
}

/// stderr of a failed command (or its stdout, or its exit status, if stderr is empty).
fn describe_failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !stderr.is_empty() {
        return stderr;
    }
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !stdout.is_empty() {
        return stdout;
    }
    format!("exited with {}", out.status)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::os::unix::fs::symlink;

    /// Run one SQL statement with psql from the same bin dir, over TCP.
    fn psql(pg: &EmbeddedPostgres, sql: &str) -> String {
        let out = StdCommand::new(pg.cluster.bin_dir.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
            .args(["-tAc", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn is_running(cluster: &Cluster) -> bool {
        matches!(
            cluster.status_blocking().expect("pg_ctl status"),
            Status::Running
        )
    }

    #[tokio::test]
    async fn starting_in_an_empty_dir_initialises_a_cluster_and_accepts_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = EmbeddedPostgres::start(dir.path(), Placement::Exact)
            .await
            .expect("start");
        assert!(pg.owned);
        assert!(dir.path().join("data/PG_VERSION").is_file());
        assert!(dir.path().join("postgres.log").is_file());
        assert_eq!(
            pg.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
        );
        assert_eq!(
            pg.url_for_database("my db"),
            format!("postgres://postgres@127.0.0.1:{}/my%20db", pg.port())
        );
        assert_eq!(psql(&pg, "select 1"), "1");
        // The Unix socket is off and we listen on loopback only.
        assert_eq!(psql(&pg, "show unix_socket_directories"), "");
        assert_eq!(psql(&pg, "show listen_addresses"), "127.0.0.1");
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_second_start_reuses_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let pg = EmbeddedPostgres::start(dir.path(), Placement::Exact)
            .await
            .expect("cold start");
        eprintln!("cold start (initdb + start): {:?}", t.elapsed());
        psql(
            &pg,
            "create table kept (v text); insert into kept values ('still here')",
        );
        let t = Instant::now();
        pg.stop().await.expect("stop");
        eprintln!("stop: {:?}", t.elapsed());

        let t = Instant::now();
        let pg = EmbeddedPostgres::start(dir.path(), Placement::Exact)
            .await
            .expect("warm start");
        eprintln!("warm start: {:?}", t.elapsed());
        assert!(pg.owned);
        assert_eq!(psql(&pg, "select v from kept"), "still here");

        // Dropping an owned handle without stop() still stops the server.
        let cluster = pg.cluster.clone();
        drop(pg);
        assert!(!is_running(&cluster));
    }

    #[tokio::test]
    async fn starting_twice_on_the_same_dir_attaches_instead_of_starting_a_second_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = EmbeddedPostgres::start(dir.path(), Placement::Exact)
            .await
            .expect("start");
        let attached = EmbeddedPostgres::start(dir.path(), Placement::Exact)
            .await
            .expect("attach");
        assert!(owner.owned);
        assert!(!attached.owned);
        assert_eq!(attached.port(), owner.port());

        attached
            .stop()
            .await
            .expect("stopping the non-owner is a no-op");
        assert!(is_running(&owner.cluster));
        assert_eq!(psql(&owner, "select 1"), "1");

        let cluster = owner.cluster.clone();
        owner.stop().await.expect("stop");
        assert!(!is_running(&cluster));
    }

    #[tokio::test]
    async fn stop_shuts_the_server_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = EmbeddedPostgres::start(dir.path(), Placement::Exact)
            .await
            .expect("start");
        let port = pg.port();
        let cluster = pg.cluster.clone();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        pg.stop().await.expect("stop");

        assert!(!is_running(&cluster));
        let err = TcpStream::connect(("127.0.0.1", port)).expect_err("port must be closed");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        assert!(!dir.path().join("data/postmaster.pid").exists());

        // Stopping a server that is already down is fine.
        cluster.stop().await.expect("stop when already down");

        // A port someone else holds is recognised as such (so start retries).
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = squatter.local_addr().expect("addr").port();
        match cluster.start_on(taken).await {
            Err(StartFailure::PortTaken(e)) => {
                assert!(e.to_string().contains("already in use"), "{e}");
            }
            Err(StartFailure::Other(e)) => panic!("expected PortTaken, got {e}"),
            Ok(()) => panic!("started on a taken port"),
        }
        assert!(!is_running(&cluster));
    }

    #[tokio::test]
    async fn a_cluster_of_another_major_version_is_refused_with_both_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir");
        std::fs::write(dir.path().join("data/PG_VERSION"), "9.6\n").expect("write");
        let err = EmbeddedPostgres::start(dir.path(), Placement::Exact)
            .await
            .expect_err("must refuse");
        let EmbeddedError::VersionMismatch {
            data_version,
            bin_version,
            ..
        } = &err
        else {
            panic!("expected VersionMismatch, got {err}");
        };
        assert_eq!(data_version, "9.6");
        assert_ne!(bin_version, "9.6");
        let message = err.to_string();
        assert!(message.contains("PostgreSQL 9.6"), "{message}");
        assert!(
            message.contains(&format!("PostgreSQL {bin_version}")),
            "{message}"
        );
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn major_versions_are_read_from_version_output() {
        let v = |s| parse_major_version(s);
        assert_eq!(
            v("pg_ctl (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)").as_deref(),
            Some("15")
        );
        assert_eq!(v("initdb (PostgreSQL) 16beta1").as_deref(), Some("16"));
        assert_eq!(v("pg_ctl (PostgreSQL) 9.6.24").as_deref(), Some("9.6"));
        assert_eq!(v("pg_ctl (PostgreSQL)"), None);
    }

    #[tokio::test]
    async fn a_dir_the_postgres_user_cannot_reach_is_refused_when_root() {
        if !Uid::effective().is_root() {
            return;
        }
        // A 0700 root-owned directory: postgres cannot enter it.
        let outer = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let dir = outer.path().join("pg");
        let err = EmbeddedPostgres::start(&dir, Placement::Exact)
            .await
            .expect_err("must refuse");
        let EmbeddedError::Unreachable {
            blocked_at, user, ..
        } = &err
        else {
            panic!("expected Unreachable, got {err}");
        };
        assert_eq!(blocked_at, outer.path());
        assert_eq!(user, "postgres");
        assert!(err.to_string().contains("FLOWLET__DATABASE__EMBEDDED_DIR"));
        assert!(!dir.exists(), "nothing is created where it cannot be used");
    }

    /// Removes a directory when the test ends, passed or not.
    struct RemoveOnDrop(PathBuf);

    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            drop(std::fs::remove_dir_all(&self.0));
        }
    }

    #[tokio::test]
    async fn as_root_a_default_dir_under_a_0700_home_moves_to_the_temp_dir_and_is_found_again() {
        if !Uid::effective().is_root() {
            return;
        }
        // A clone under root's home (0700), as in containers and CI runners.
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let requested = home.path().join("clone/.flowlet/postgres");
        let expected = std::env::temp_dir().join(fallback_name(
            &resolve_existing_prefix(&requested).expect("resolve"),
        ));
        let expected = resolve_existing_prefix(&expected).expect("resolve");
        let _cleanup = RemoveOnDrop(expected.clone());

        let pg = EmbeddedPostgres::start(&requested, Placement::Relocatable)
            .await
            .expect("starts from the fallback directory");
        assert_eq!(pg.dir(), expected);
        assert!(!requested.exists(), "nothing is left under the home");
        let name = expected
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("flowlet-root-"), "{name}");
        let meta = std::fs::symlink_metadata(&expected).expect("stat");
        let postgres = User::from_name(SUPERUSER)
            .expect("lookup")
            .expect("postgres user");
        assert_eq!(
            meta.uid(),
            postgres.uid.as_raw(),
            "owned by the server's user"
        );
        assert_eq!(meta.mode() & 0o777, 0o700, "closed to everyone else");
        psql(
            &pg,
            "create table kept (v text); insert into kept values ('found again')",
        );
        pg.stop().await.expect("stop");

        let pg = EmbeddedPostgres::start(&requested, Placement::Relocatable)
            .await
            .expect("second start");
        assert_eq!(pg.dir(), expected, "the same directory on the next start");
        assert_eq!(psql(&pg, "select v from kept"), "found again");
        pg.stop().await.expect("stop");
    }

    #[test]
    fn a_fallback_dir_someone_else_could_have_planted_is_refused() {
        let run_as = RunAs::determine().expect("run as");
        let tmp = tempfile::tempdir().expect("tempdir");
        let requested = Path::new("/home/someone/clone/.flowlet/postgres");
        let refused = |dir: &Path| match create_private_dir(requested, dir, &run_as) {
            Err(EmbeddedError::UnsafeFallback { reason, .. }) => reason,
            other => panic!(
                "expected UnsafeFallback for {}, got {other:?}",
                dir.display()
            ),
        };

        // Absent: created, private.
        let fresh = tmp.path().join("fresh");
        create_private_dir(requested, &fresh, &run_as).expect("created");
        let mode = std::fs::metadata(&fresh).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Ours and private: reused.
        create_private_dir(requested, &fresh, &run_as).expect("reused");

        // A symlink to a directory (even our own) could point anywhere.
        let link = tmp.path().join("link");
        symlink(&fresh, &link).expect("symlink");
        assert_eq!(refused(&link), "is not a directory");
        // Open to others.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(refused(&open).contains("777"));
        // A plain file.
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(refused(&file), "is not a directory");
        // Another user's (root can make one to test this).
        if Uid::effective().is_root() {
            let theirs = tmp.path().join("theirs");
            std::fs::create_dir(&theirs).expect("mkdir");
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).expect("chown");
            assert_eq!(refused(&theirs), "belongs to uid 4242");
        }
        let message = EmbeddedError::UnsafeFallback {
            requested: requested.to_path_buf(),
            fallback: link,
            user: "postgres".into(),
            reason: "is not a directory".into(),
        }
        .to_string();
        assert!(
            message.contains("FLOWLET__DATABASE__EMBEDDED_DIR"),
            "{message}"
        );
    }

    #[test]
    fn the_fallback_name_comes_from_the_user_and_the_requested_path() {
        let a = fallback_name(Path::new("/root/a/.flowlet/postgres"));
        let b = fallback_name(Path::new("/root/b/.flowlet/postgres"));
        assert_eq!(a, fallback_name(Path::new("/root/a/.flowlet/postgres")));
        assert_ne!(a, b);
        let uid = Uid::effective();
        let user = User::from_uid(uid)
            .expect("lookup")
            .map_or_else(|| uid.to_string(), |u| u.name);
        assert!(a.starts_with(&format!("flowlet-{user}-")), "{a}");
        assert_eq!(a.len(), format!("flowlet-{user}-").len() + 16);
    }

    #[test]
    fn a_path_is_resolved_as_far_as_it_exists() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = std::fs::canonicalize(tmp.path()).expect("canonicalize");
        std::fs::create_dir(real.join("real")).expect("mkdir");
        symlink(real.join("real"), real.join("link")).expect("symlink");
        assert_eq!(
            resolve_existing_prefix(&real.join("link/not/yet")).expect("resolve"),
            real.join("real/not/yet")
        );
        let relative = resolve_existing_prefix(Path::new("no-such-dir/pg")).expect("resolve");
        assert!(relative.is_absolute());
        assert!(relative.ends_with("no-such-dir/pg"));
    }

    /// A fake bin dir with executable `initdb` and `pg_ctl` (and maybe only one of them).
    fn fake_bin(dir: &Path, programs: &[&str]) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        for program in programs {
            let path = dir.join(program);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::canonicalize(dir).expect("canonicalize")
    }

    #[test]
    fn binaries_are_discovered_in_order_path_then_pg_config_then_globs() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        let both = ["initdb", "pg_ctl"];
        fake_bin(&r.join("only-initdb"), &["initdb"]);
        let real = fake_bin(&r.join("real/15/bin"), &both);
        std::fs::create_dir(r.join("links")).expect("mkdir");
        symlink(real.join("initdb"), r.join("links/initdb")).expect("symlink");
        symlink(real.join("pg_ctl"), r.join("links/pg_ctl")).expect("symlink");
        let other = fake_bin(&r.join("other/bin"), &both);
        fake_bin(&r.join("pg/9.6/bin"), &both);
        fake_bin(&r.join("pg/13/bin"), &both);
        let v16 = fake_bin(&r.join("pg/16/bin"), &both);
        fake_bin(&r.join("pg/17/bin"), &["initdb"]);
        let globs = [
            format!("{}/nothing/bin", r.display()),
            format!("{}/pg/*/bin", r.display()),
        ];
        let globs: Vec<&str> = globs.iter().map(String::as_str).collect();
        let path = |dirs: &[&str]| {
            std::env::join_paths(dirs.iter().map(|d| r.join(d))).expect("join_paths")
        };

        // PATH wins, a dir with only initdb is skipped, symlinks are resolved.
        let p = path(&["only-initdb", "links"]);
        let found = discover_bin_dir(Some(&p), || Some(other.clone()), &globs);
        assert_eq!(found, Some(real.clone()));

        // Then pg_config.
        let p = path(&["only-initdb"]);
        let found = discover_bin_dir(Some(&p), || Some(other.clone()), &globs);
        assert_eq!(found, Some(other.clone()));

        // Then the globs, highest version with both binaries first.
        let found = discover_bin_dir(Some(&p), || None, &globs);
        assert_eq!(found, Some(v16));

        // A pg_config pointing at a dir without the server binaries is skipped.
        let found = discover_bin_dir(None, || Some(r.join("only-initdb")), &globs[..1]);
        assert_eq!(found, None);

        assert_eq!(
            EmbeddedError::BinariesNotFound.to_string(),
            "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH, via pg_config, or \
             under /usr/lib/postgresql/*/bin: install PostgreSQL (e.g. `apt-get install \
             postgresql`) or set FLOWLET__DATABASE__URL to an existing server"
        );
    }

    #[test]
    fn the_real_machine_has_binaries() {
        let dir = find_bin_dir().expect("PostgreSQL installed here");
        assert!(has_server_binaries(&dir));
        // Symlinks such as /usr/local/bin/initdb resolve to the real dir.
        assert_eq!(dir, std::fs::canonicalize(&dir).expect("canonicalize"));
    }

    #[test]
    fn postmaster_pid_gives_port_and_readiness() {
        let ready = "123\n/d\n1700000000\n54321\n\n127.0.0.1\n  1 2\nready   \n";
        let info = parse_postmaster_pid(ready).expect("parses");
        assert_eq!(info.port, 54321);
        assert!(info.ready);
        let starting = ready.replace("ready", "starting");
        assert!(!parse_postmaster_pid(&starting).expect("parses").ready);
        assert!(parse_postmaster_pid("123\n/d\n").is_err());
        let no_tcp = "123\n/d\n1700000000\n54321\n\n\n  1 2\nready\n";
        assert!(parse_postmaster_pid(no_tcp).is_err());
    }
}
