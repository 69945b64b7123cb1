//! Every filesystem write of the prepare phase goes through here: atomic
//! replacement (temp file in the same directory, fsync, rename, fsync of the
//! directory) with modes that are never wider than the final one, and errors
//! that name the path.

use crate::config::model::Owner;
use nix::unistd::{Gid, Uid};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An I/O error and the path it happened on.
#[derive(Debug)]
pub struct FsError {
    pub path: PathBuf,
    pub err: io::Error,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.err.raw_os_error() {
            Some(nix::libc::ENOSPC) => " (the filesystem is full)",
            Some(nix::libc::EROFS) => " (the filesystem is mounted read-only)",
            Some(nix::libc::EACCES | nix::libc::EPERM) => {
                " (permission denied: check the owner and mode)"
            }
            _ => "",
        };
        write!(f, "{}: {}{hint}", self.path.display(), self.err)
    }
}

impl std::error::Error for FsError {}

/// Attach `path` to an I/O result.
pub fn at<T>(path: &Path, r: io::Result<T>) -> Result<T, FsError> {
    r.map_err(|err| FsError {
        path: path.to_path_buf(),
        err,
    })
}

/// Resolve `user[:group]` (names or numbers) to ids; without a group, the
/// user's primary group. Names come from the container's /etc/passwd and
/// /etc/group (crate::users), never from NSS.
pub fn resolve_owner(o: &Owner) -> io::Result<(Uid, Gid)> {
    let not_found = |what: &str| io::Error::new(io::ErrorKind::NotFound, format!("no such {what}"));
    let (uid, primary) = match o.user.parse::<u32>() {
        Ok(n) => (
            Uid::from_raw(n),
            crate::users::user_by_uid(n)
                .ok()
                .flatten()
                .map(|u| Gid::from_raw(u.gid)),
        ),
        Err(_) => {
            let u = crate::users::user_by_name(&o.user)?
                .ok_or_else(|| not_found(&format!("user {}", o.user)))?;
            (Uid::from_raw(u.uid), Some(Gid::from_raw(u.gid)))
        }
    };
    let gid = match &o.group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => Gid::from_raw(
                crate::users::group_by_name(g)?
                    .ok_or_else(|| not_found(&format!("group {g}")))?
                    .gid,
            ),
        },
        None => primary.unwrap_or_else(|| Gid::from_raw(uid.as_raw())),
    };
    Ok((uid, gid))
}

pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    let d = at(dir, File::open(dir))?;
    at(dir, d.sync_all())
}

/// Replace `path` with `data` atomically. The temp file is created 0600 and
/// only then given its owner and final mode, so the content is never
/// readable by anyone the final mode would not allow.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(Uid, Gid)>,
) -> Result<(), FsError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.mc-launcher.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = at(
            &tmp,
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp),
        )?;
        at(&tmp, f.write_all(data))?;
        if let Some((uid, gid)) = owner {
            at(
                &tmp,
                nix::unistd::fchown(&f, Some(uid), Some(gid)).map_err(io::Error::from),
            )?;
        }
        at(
            &tmp,
            f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777)),
        )?;
        at(&tmp, f.sync_all())?;
        at(path, std::fs::rename(&tmp, path))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Create `dir` (and parents) if missing, then give it `mode` and `owner`.
pub fn ensure_dir(dir: &Path, mode: u32, owner: Option<(Uid, Gid)>) -> Result<(), FsError> {
    if !dir.is_dir() {
        at(dir, std::fs::create_dir_all(dir))?;
    }
    at(
        dir,
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)),
    )?;
    if let Some((uid, gid)) = owner {
        at(
            dir,
            nix::unistd::chown(dir, Some(uid), Some(gid)).map_err(io::Error::from),
        )?;
    }
    Ok(())
}

/// Where the state dir goes when the configured one is not writable, in order.
pub fn state_fallbacks() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/run/mc-launcher")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(x).join("mc-launcher"));
    }
    out.push(std::env::temp_dir().join(format!("mc-launcher-{}", Uid::effective())));
    out
}

/// The state directory the launcher can really write to: `preferred`, or,
/// when it cannot be created or written (a `--read-only` root, a non-root
/// `--user`), `/run/mc-launcher`, `$XDG_RUNTIME_DIR/mc-launcher`, then
/// `$TMPDIR/mc-launcher-UID`. A fallback is logged: what it holds (digests,
/// the saved image pillar) then lasts only as long as that directory.
pub fn usable_state_dir(preferred: &Path) -> PathBuf {
    let writable = |d: &Path| {
        std::fs::create_dir_all(d).is_ok()
            && nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok()
    };
    if writable(preferred) {
        return preferred.to_path_buf();
    }
    for c in state_fallbacks() {
        if c != preferred && writable(&c) {
            log::warn!(
                "state dir {} is not writable: using {} (digests and the saved image pillar last only as long as it)",
                preferred.display(),
                c.display()
            );
            return c;
        }
    }
    preferred.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_write_replaces_with_mode_and_leaves_no_temp() {
        let d = std::env::temp_dir().join(format!("mcl-fsutil-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let p = d.join("f");
        std::fs::write(&p, "old").expect("write");
        write_atomic(&p, b"new", 0o640, None).expect("atomic");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "new");
        assert_eq!(std::fs::metadata(&p).expect("md").mode() & 0o777, 0o640);
        assert_eq!(
            std::fs::read_dir(&d).expect("ls").count(),
            1,
            "no temp file left"
        );
        let err = write_atomic(&d.join("missing/f"), b"x", 0o600, None).expect_err("no dir");
        assert!(err.to_string().contains("missing"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
