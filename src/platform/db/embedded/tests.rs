//! Tests of the embedded server: starting, reusing, attaching and stopping a real cluster,
//! version and ownership checks, directory placement as root, binary discovery and parsing.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Instant;

use nix::unistd::{Uid, User};

use super::binaries::{discover_bin_dir, has_server_binaries, parse_major_version};
use super::cluster::{Cluster, RunAs, StartFailure, Status, parse_postmaster_pid};
use super::dirs::{create_private_dir, fallback_name, resolve_existing_prefix};
use super::*;

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
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
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
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
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
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).expect("chmod");
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
    let path =
        |dirs: &[&str]| std::env::join_paths(dirs.iter().map(|d| r.join(d))).expect("join_paths");

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
