//! The server processes of one cluster: the system user they run as, and the `initdb` /
//! `pg_ctl` commands that create, start, probe and stop it, with what they read back
//! (`postmaster.pid`, the server log, a failed command's output).

use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};
use tracing::info;

use super::{EmbeddedError, SUPERUSER, io_err};

/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// How long we wait for an already running server to become ready before attaching.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How many lines of the server log go into a start error.
const LOG_TAIL_LINES: usize = 20;

/// The system user the server processes run as.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Whether we switch to this user (we are root) or it is simply ourselves.
    pub(super) switch: bool,
}

impl RunAs {
    /// Ourselves when not root; the `postgres` system user when root.
    pub(super) fn determine() -> Result<RunAs, EmbeddedError> {
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
pub(super) struct Cluster {
    pub(super) dir: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) log_file: PathBuf,
    pub(super) bin_dir: PathBuf,
    pub(super) run_as: RunAs,
}

/// What `pg_ctl status` told us.
pub(super) enum Status {
    Running,
    NotRunning,
}

/// Why one start attempt failed.
pub(super) enum StartFailure {
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
    pub(super) async fn initdb(&self) -> Result<(), EmbeddedError> {
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

    pub(super) async fn status(&self) -> Result<Status, EmbeddedError> {
        let out = self.run("pg_ctl status", self.status_command()).await?;
        self.interpret_status(&out)
    }

    pub(super) fn status_blocking(&self) -> Result<Status, EmbeddedError> {
        let out = self
            .status_command()
            .output()
            .map_err(io_err("running pg_ctl status"))?;
        self.interpret_status(&out)
    }

    /// If a server runs on the data directory, wait until it is ready and return its port.
    pub(super) async fn running_port(&self) -> Result<Option<u16>, EmbeddedError> {
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
    pub(super) async fn start_on(&self, port: u16) -> Result<(), StartFailure> {
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

    pub(super) async fn stop(&self) -> Result<(), EmbeddedError> {
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

    pub(super) fn stop_blocking(&self) -> Result<(), EmbeddedError> {
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

/// Port (line 4) and readiness (line 8) from `postmaster.pid`.
pub(super) struct PostmasterPid {
    pub(super) port: u16,
    pub(super) ready: bool,
}

pub(super) fn parse_postmaster_pid(text: &str) -> Result<PostmasterPid, String> {
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
pub(super) fn free_port() -> Result<u16, EmbeddedError> {
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
