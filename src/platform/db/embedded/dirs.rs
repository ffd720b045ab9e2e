//! The directories the server uses: where they go (and the private fallback under the temp
//! dir when the server's user cannot reach the requested one), who owns them, and with which
//! permissions.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};
use tracing::info;

use super::cluster::{Cluster, RunAs};
use super::{EmbeddedError, Placement, io_err};

pub(super) async fn check_owner(cluster: &Cluster) -> Result<(), EmbeddedError> {
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
pub(super) async fn prepare_new_data_dir(cluster: &Cluster) -> Result<(), EmbeddedError> {
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
pub(super) async fn prepare_log_file(cluster: &Cluster) -> Result<(), EmbeddedError> {
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

pub(super) fn chown(path: &Path, run_as: &RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(io_err(format!(
        "giving {} to the `{}` user",
        path.display(),
        run_as.name
    )))
}

/// The directory the server will use: `requested` unless the server's user cannot reach it
/// and `placement` allows a private fallback under the temp dir.
pub(super) fn choose_dir(
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
pub(super) fn fallback_name(requested: &Path) -> String {
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
pub(super) fn create_private_dir(
    requested: &Path,
    dir: &Path,
    run_as: &RunAs,
) -> Result<(), EmbeddedError> {
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
pub(super) fn resolve_existing_prefix(path: &Path) -> Result<PathBuf, EmbeddedError> {
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
pub(super) fn first_unsearchable_ancestor(
    dir: &Path,
    user: &RunAs,
) -> Result<Option<PathBuf>, EmbeddedError> {
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
